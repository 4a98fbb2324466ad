package main

// exec, and execIn: running a command in a box with the terminal's stdio,
// shared with run.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox"
)

type execFlags struct {
	interactive, tty bool
	imageCmd         bool // run the image's command (Command.UseImageCmd)
	user, workdir    string
	env              multi
}

// execIn runs cmd in b with the terminal's stdio and returns its status.
func (c *cli) execIn(ctx context.Context, b *libbox.Box, args []string, f execFlags, sigs <-chan os.Signal) error {
	cmd := libbox.Command{Args: args, Env: f.env, Dir: f.workdir, User: f.user, TTY: f.tty, Stdout: c.stdout, Stderr: c.stderr,
		UseImageCmd: f.imageCmd}
	if f.interactive {
		cmd.Stdin = os.Stdin
	}
	in := int(os.Stdin.Fd())
	if f.tty {
		if term.IsTerminal(in) {
			if w, h, err := term.GetSize(in); err == nil {
				cmd.Cols, cmd.Rows = uint32(w), uint32(h)
			}
			if f.interactive {
				old, err := term.MakeRaw(in)
				if err == nil {
					defer term.Restore(in, old)
				}
			}
		}
	}
	p, err := b.Exec(ctx, cmd)
	if err != nil {
		// A command that is missing or cannot run exits 127 or 126, as in a
		// shell; other failures (bad cwd or user too) are box's own (125).
		var se *libbox.SpawnError
		if errors.As(err, &se) && (se.Reason == libbox.SpawnNotFound || se.Reason == libbox.SpawnNotExecutable) {
			fmt.Fprintf(c.stderr, "box: %s\n", oneLine(err.Error()))
			if se.Reason == libbox.SpawnNotFound {
				return exitError{127}
			}
			return exitError{126}
		}
		return err
	}
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGWINCH {
				if w, h, err := term.GetSize(in); err == nil && f.tty {
					_ = p.Resize(uint32(h), uint32(w))
				}
				continue
			}
			_ = p.Signal(s.(syscall.Signal))
		case <-p.Done():
			st, err := p.Wait(ctx)
			if err != nil {
				if errdefs.IsDeadlineExceeded(err) || errdefs.IsCanceled(err) {
					fmt.Fprintf(c.stderr, "box: %s\n", oneLine(err.Error()))
				} else {
					return err
				}
			}
			if st.OOMKilled {
				fmt.Fprintf(c.stderr, "box: the OOM killer ended the process at the box's memory limit\n")
			}
			if st.Signal > 0 {
				return exitError{128 + st.Signal}
			}
			if st.ExitCode != 0 {
				return exitError{st.ExitCode}
			}
			return nil
		}
	}
}

func (c *cli) exec(args []string) error {
	fs := newFlags("exec", "BOX CMD...")
	var f execFlags
	fs.BoolVar(&f.interactive, "i", false, "forward stdin")
	fs.BoolVar(&f.tty, "t", false, "allocate a terminal")
	fs.Var(&f.env, "e", "KEY=VALUE (repeatable)")
	fs.StringVar(&f.workdir, "w", "", "working directory")
	fs.StringVar(&f.user, "u", "", "user")
	if err := parseArgs(fs, args, 2, -1, "want BOX CMD..."); err != nil {
		return err
	}
	if err := checkNames("exec", fs.Arg(0)); err != nil {
		return err
	}
	sigs := catchSignals()
	defer sigs.release()
	b, err := c.box(sigs.ctx, fs.Arg(0))
	if err == nil {
		if st := b.Info().State; st != libbox.StateRunning {
			err = errdefs.New(errdefs.FailedPrecondition, "box %s is %s: start it with `box start %s`", fs.Arg(0), st, fs.Arg(0))
		} else {
			err = b.Start(sigs.ctx) // attaches to the running box
		}
	}
	if s := sigs.handOff(); s != 0 {
		fmt.Fprintf(c.stderr, "box: interrupted by %s while attaching to the box\n", unix.SignalName(s))
		return exitError{128 + int(s)}
	}
	if err != nil {
		return err
	}
	return c.execIn(context.Background(), b, fs.Args()[1:], f, sigs.ch)
}
