package main

// stats, ps BOX, kill: a box's resource use and its running execs.

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/libbox/libbox/libbox"
)

// stats prints a box's resource use: once as JSON with --json or as a
// table with --no-stream, else a table refreshed every second (as docker
// stats does) until interrupted.
func (c *cli) stats(args []string) error {
	fl := newFlags("stats", "BOX")
	asJSON := fl.Bool("json", false, "one sample as JSON")
	once := fl.Bool("no-stream", false, "print one sample and exit")
	if err := parse(fl, args); err != nil {
		return err
	}
	if fl.NArg() != 1 {
		return usageErr("stats: want BOX")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := c.runningBox(ctx, "stats", fl.Arg(0))
	if err != nil {
		return err
	}
	for first := true; ; first = false {
		s, err := b.Stats(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if *asJSON {
			return c.printJSON(s)
		}
		if !*once && !first {
			fmt.Fprint(c.stdout, "\033[H\033[2J") // clear the screen, as docker stats does
		}
		c.statsTable(fl.Arg(0), s)
		if *once {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func (c *cli) statsTable(name string, s libbox.Stats) {
	tw := c.table("BOX\tCPU %\tCPU TIME\tMEM USAGE / LIMIT\tHOST RSS\tDISK\tNET I/O\tPROCS\tEXECS")
	net := "-"
	if s.Network {
		net = size(s.NetRxBytes) + " / " + size(s.NetTxBytes)
	}
	fmt.Fprintf(tw, "%s\t%.1f%%\t%s\t%s / %s\t%s\t%s\t%s\t%d\t%d running, %d served\n", name, s.CPUPercent,
		s.CPUTime.Round(10*time.Millisecond), size(s.MemoryUsed), size(s.MemoryTotal), size(s.HostRSS),
		size(s.DiskBytes), net, s.Processes, s.ExecsRunning, s.ExecsServed)
	tw.Flush()
	if len(s.Boot) > 0 {
		var parts []string
		for _, st := range s.Boot {
			parts = append(parts, fmt.Sprintf("%s %s", st.Name, st.Duration.Round(time.Millisecond)))
		}
		fmt.Fprintf(c.stdout, "last start: %s\n", strings.Join(parts, ", "))
	}
}

func size(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

// ps lists boxes (as ls) without arguments, a box's running execs with one.
func (c *cli) ps(args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[len(args)-1], "-") {
		return c.ls(args)
	}
	fl := newFlags("ps", "BOX")
	asJSON := fl.Bool("json", false, "JSON output")
	if err := parse(fl, args); err != nil {
		return err
	}
	if fl.NArg() != 1 {
		return usageErr("ps: want BOX (or nothing, to list boxes)")
	}
	ctx := context.Background()
	b, err := c.runningBox(ctx, "ps", fl.Arg(0))
	if err != nil {
		return err
	}
	ps, err := b.Processes(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		if ps == nil {
			ps = []libbox.ProcessInfo{}
		}
		return c.printJSON(ps)
	}
	tw := c.table("PID\tUSER\tSTARTED\tTTY\tCOMMAND")
	for _, p := range ps {
		user := p.User
		if user == "" {
			user = strconv.Itoa(int(p.UID))
		}
		tty := "-"
		if p.TTY {
			tty = "yes"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", p.Pid, user, ago(p.Started), tty, strings.Join(p.Args, " "))
	}
	return tw.Flush()
}

// kill signals a process of a box by its pid in the box.
func (c *cli) kill(args []string) error {
	fl := newFlags("kill", "BOX PID")
	sig := fl.String("s", "KILL", "signal name or number")
	if err := parse(fl, args); err != nil {
		return err
	}
	if fl.NArg() != 2 {
		return usageErr("kill: want BOX PID (see box ps BOX)")
	}
	pid, err := strconv.Atoi(fl.Arg(1))
	if err != nil || pid <= 0 {
		return usageErr("kill: pid %q is not a positive number", fl.Arg(1))
	}
	s, err := parseSignal(*sig)
	if err != nil {
		return err
	}
	ctx := context.Background()
	b, err := c.runningBox(ctx, "kill", fl.Arg(0))
	if err != nil {
		return err
	}
	return b.KillProcess(ctx, pid, s)
}

func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	names := map[string]syscall.Signal{"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT,
		"KILL": syscall.SIGKILL, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "TERM": syscall.SIGTERM,
		"CONT": syscall.SIGCONT, "STOP": syscall.SIGSTOP}
	if v, ok := names[strings.TrimPrefix(strings.ToUpper(s), "SIG")]; ok {
		return v, nil
	}
	return 0, usageErr("kill: unknown signal %q", s)
}
