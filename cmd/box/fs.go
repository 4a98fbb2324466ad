package main

// fs: the file API of a running box (box fs ls|cat|write|rm|mkdir|mv|stat|watch).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"text/tabwriter"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox"
)

const fsUsage = `usage: box fs COMMAND [OPTIONS] BOX PATH...

  ls [-d DEPTH] [--json] BOX PATH      list a directory (DEPTH levels, default 1)
  cat [--offset N] [--length N] BOX PATH
                                       write a file's bytes to stdout
  write [--append] [--mode 0644] [-u USER] BOX PATH
                                       write stdin to a file (atomically unless --append)
  rm [-r] BOX PATH                     remove (-r: a directory and what it holds)
  mkdir [-p] BOX PATH                  create a directory (-p: parents, no error if it exists)
  mv BOX SRC DST                       rename
  stat [--json] BOX PATH               describe a path
  watch [-r] BOX PATH                  print changes below a directory until interrupted
`

// runningBox returns the named box, attached, refusing one that is not running.
func (c *cli) runningBox(ctx context.Context, cmd, name string) (*libbox.Box, error) {
	if err := checkNames(cmd, name); err != nil {
		return nil, err
	}
	b, err := c.box(ctx, name)
	if err != nil {
		return nil, err
	}
	if st := b.Info().State; st != libbox.StateRunning {
		return nil, errdefs.New(errdefs.FailedPrecondition, "box %s is %s: start it with `box start %s`", name, st, name)
	}
	return b, b.Start(ctx)
}

func (c *cli) fs(args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(c.stderr, fsUsage)
		if len(args) == 0 {
			return usageErr("fs: want a command (ls, cat, write, rm, mkdir, mv, stat, watch)")
		}
		return nil
	}
	sub, args := args[0], args[1:]
	fl := newFlags("fs "+sub, "BOX PATH")
	depth := 1
	var offset, length int64 = 0, -1
	var appendTo, recursive, parents, asJSON bool
	mode, user := "0644", ""
	want := 2
	switch sub {
	case "ls":
		fl.IntVar(&depth, "d", 1, "depth: levels to list")
		fl.BoolVar(&asJSON, "json", false, "JSON output")
	case "cat":
		fl.Int64Var(&offset, "offset", 0, "first byte to read")
		fl.Int64Var(&length, "length", -1, "bytes to read (-1: to the end)")
	case "write":
		fl.BoolVar(&appendTo, "append", false, "append instead of replacing")
		fl.StringVar(&mode, "mode", "0644", "permission bits (octal)")
		fl.StringVar(&user, "u", "", "owner: name, uid or uid:gid (default: the box's user)")
	case "rm":
		fl.BoolVar(&recursive, "r", false, "remove a directory and what it holds")
	case "mkdir":
		fl.BoolVar(&parents, "p", false, "create parents; no error if it exists")
	case "mv":
		fl = newFlags("fs mv", "BOX SRC DST")
		want = 3
	case "stat":
		fl.BoolVar(&asJSON, "json", false, "JSON output")
	case "watch":
		fl.BoolVar(&recursive, "r", false, "watch subdirectories too")
	default:
		return usageErr("fs: unknown command %q (ls, cat, write, rm, mkdir, mv, stat, watch)", sub)
	}
	if err := parse(fl, args); err != nil {
		return err
	}
	if fl.NArg() != want {
		return usageErr("fs %s: want BOX and %d path(s)", sub, want-1)
	}
	ctx := context.Background()
	b, err := c.runningBox(ctx, "fs "+sub, fl.Arg(0))
	if err != nil {
		return err
	}
	p := fl.Arg(1)
	switch sub {
	case "ls":
		list, err := b.ListDir(ctx, p, depth)
		if err != nil {
			return err
		}
		if asJSON {
			return c.printJSON(list)
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		for _, fi := range list {
			c.fileLine(tw, fi)
		}
		return tw.Flush()
	case "cat":
		_, err := b.ReadFileTo(ctx, p, c.stdout, offset, length)
		return err
	case "write":
		m, err := strconv.ParseUint(mode, 8, 32)
		if err != nil || m > 0o7777 {
			return usageErr("fs write: --mode %q: want octal permission bits like 0644", mode)
		}
		opts := libbox.WriteOptions{Mode: libbox.FileModeOf(uint32(m)), User: user}
		if appendTo {
			data, err := readAll(os.Stdin)
			if err != nil {
				return err
			}
			return b.AppendFile(ctx, p, data, opts)
		}
		_, err = b.WriteFileFrom(ctx, p, os.Stdin, opts)
		return err
	case "rm":
		return b.Remove(ctx, p, recursive)
	case "mkdir":
		return b.Mkdir(ctx, p, parents)
	case "mv":
		return b.Rename(ctx, p, fl.Arg(2))
	case "stat":
		fi, err := b.Stat(ctx, p)
		if err != nil {
			return err
		}
		if asJSON {
			return c.printJSON(fi)
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		c.fileLine(tw, fi)
		return tw.Flush()
	}
	// watch
	sctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	w, err := b.Watch(sctx, p, recursive)
	if err != nil {
		return err
	}
	defer w.Close()
	for ev := range w.Events() {
		fmt.Fprintf(c.stdout, "%s\t%s\n", ev.Type, ev.Path)
	}
	return w.Err()
}

// fileLine prints one FileInfo the way ls -l does.
func (c *cli) fileLine(tw *tabwriter.Writer, fi libbox.FileInfo) {
	name := fi.Path
	if fi.LinkTarget != "" {
		name += " -> " + fi.LinkTarget
	}
	fmt.Fprintf(tw, "%s\t%#o\t%d:%d\t%d\t%s\t%s\n", fi.Type, fi.UnixMode, fi.UID, fi.GID, fi.Size,
		fi.ModTime.Local().Format("2006-01-02 15:04"), name)
}

// table starts a tab-aligned table on stdout with its header line; the
// caller writes tab-separated rows and flushes it.
func (c *cli) table(header string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	return tw
}

func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func readAll(f *os.File) ([]byte, error) {
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.InvalidArgument, err, "read stdin")
	}
	return data, nil
}
