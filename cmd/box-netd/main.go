// Command box-netd is the network helper of a detached box: it runs the
// box's user-mode network (libbox/network) in a process of its own, so the
// network and its published ports outlive the process that started the
// box. libbox starts it and talks to it; see libbox/network's Helper for
// the contract. It never touches the box itself: it only gets the host end
// of the box's link.
package main

import (
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/libbox/libbox/libbox/network"
)

func main() {
	switch {
	case len(os.Args) == 2:
		// Launcher: run the helper in a new session and exit at once, so the
		// process starting it has nothing to reap and the helper belongs to
		// no process that may go away.
		exe, err := os.Executable()
		if err == nil {
			cmd := exec.Command(exe, "--serve", os.Args[1])
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			err = cmd.Start()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "box-netd: %v\n", err)
			os.Exit(1)
		}
	case len(os.Args) == 3 && os.Args[1] == "--serve":
		signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
		logger := log.New(os.Stderr, "", log.LstdFlags)
		if err := network.ServeHelper(os.Args[2], os.Stdin, os.Stdout, logger.Printf); err != nil {
			logger.Printf("box-netd: %v", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "usage: box-netd BOX-DIR (started by libbox; its configuration comes on stdin)")
		os.Exit(2)
	}
}
