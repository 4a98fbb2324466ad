// Command box-agent is the libbox guest agent: PID 1 of every box (or a
// plain process in tests). It serves the agent protocol (guest/agentpb)
// on one listener and spawns processes on a dedicated spawn thread.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/guest/agent"
	"github.com/libbox/libbox/guest/boot"
	"github.com/libbox/libbox/guest/listen"
	"github.com/libbox/libbox/guest/spawner"
	"github.com/libbox/libbox/internal/forkserver"
)

var version = "dev"

func main() {
	mainAt := time.Now()
	if len(os.Args) == 3 && os.Args[1] == "--fork-server" && os.Args[2] == "fd:3" {
		// Not an agent: the host's fork server (see package forkserver).
		if err := forkserver.Serve(3); err != nil {
			fmt.Fprintln(os.Stderr, "box-agent:", err)
			os.Exit(1)
		}
		return
	}
	// The protobuf runtime's lazy per-type setup runs while the agent
	// boots, not on its first requests; joined before it serves.
	warmed := make(chan struct{})
	go func() {
		defer close(warmed)
		agent.Warm()
	}()
	listenAddr := flag.String("listen", "", "unix:PATH | fd:N | vsock:PORT | serial:DEV")
	root := flag.String("root", "", "directory processes see as / (spawned with chroot)")
	sandbox := flag.String("sandbox", "", "sandbox config (a file or fd:N): become PID 1 of a namespace sandbox")
	hostname := flag.String("hostname", "", "hostname reported to processes")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version)
		return
	}
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("box-agent: ")

	// Box processes start with every signal at its default action. A
	// signal the agent ignores stays ignored in every process it spawns (a
	// box's `yes | head` would never end), while a handled one is reset
	// in the child. So SIGPIPE, which must not kill the agent on its
	// stdout or stderr (on other fds Go turns it into EPIPE), is handled,
	// not ignored; and so are SIGHUP and SIGINT when the agent was started
	// with them ignored (a host run under nohup), which Go would otherwise
	// keep ignored. The channel is never read: a signal that finds it full
	// is dropped.
	sigs := []os.Signal{syscall.SIGPIPE}
	for _, s := range []os.Signal{syscall.SIGHUP, syscall.SIGINT} {
		if signal.Ignored(s) {
			sigs = append(sigs, s)
		}
	}
	signal.Notify(make(chan os.Signal, 1), sigs...)

	opts := agent.Options{Root: *root, Hostname: *hostname, Version: version, Logf: log.Printf}
	powerOff := false
	switch {
	case *sandbox != "":
		cfg, err := boot.Sandbox(*sandbox)
		if err != nil {
			log.Fatalf("sandbox setup: %v", err)
		}
		*listenAddr = cfg.Listen
		opts.PID1 = true
		opts.Hostname = cfg.Hostname
		opts.SpawnSetup = cfg.SpawnSetup
		opts.SpawnGate = cfg.SpawnGate
	case os.Getpid() == 1 && *listenAddr == "":
		cfg, err := boot.VM()
		if err != nil {
			log.Printf("vm boot: %v", err)
			powerOffNow()
		}
		*listenAddr = cfg.Listen
		opts.Root = cfg.Root
		opts.PID1 = true
		opts.Hostname = cfg.Hostname
		opts.SyncOnShutdown = true
		opts.OwnKernel = true
		powerOff = true
	}
	opts.BootTimes = map[string]time.Time{"main": mainAt, "boot": time.Now()}
	if *listenAddr == "" {
		fmt.Fprintln(os.Stderr, "box-agent: --listen is required (unix:PATH, fd:N, vsock:PORT or serial:DEV)")
		os.Exit(2)
	}
	if os.Getpid() != 1 {
		// Orphans of our children come to us and are reaped.
		_ = spawner.SetSubreaper()
	}
	ln, err := listen.Listen(*listenAddr)
	if err != nil {
		log.Printf("listen %s: %v", *listenAddr, err)
		if powerOff {
			powerOffNow()
		}
		os.Exit(1)
	}
	<-warmed
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err = agent.Serve(ctx, ln, opts)
	if err != nil {
		log.Printf("serve: %v", err)
	}
	if powerOff {
		powerOffNow()
	}
	if err != nil {
		os.Exit(1)
	}
}

func powerOffNow() {
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	os.Exit(1)
}
