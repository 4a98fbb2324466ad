package main

// snapshot create|ls|rm, restore and export: a box's file system frozen,
// rolled back, and written as an OCI image layout.

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/libbox/libbox/libbox"
)

func (c *cli) snapshot(args []string) error {
	if len(args) == 0 {
		return usageErr("snapshot: want a subcommand: create, ls or rm")
	}
	switch args[0] {
	case "create":
		return c.snapshotCreate(args[1:])
	case "ls":
		return c.snapshotLs(args[1:])
	case "rm":
		return c.snapshotRm(args[1:])
	}
	return usageErr("snapshot: unknown subcommand %q: want create, ls or rm", args[0])
}

func (c *cli) snapshotCreate(args []string) error {
	fs := newFlags("snapshot create", "BOX NAME")
	memory := fs.Bool("memory", false, "also save a running VM box's memory and device state: a box made from it resumes instead of booting")
	if err := parseArgs(fs, args, 2, 2, "want BOX NAME"); err != nil {
		return err
	}
	if err := checkNames("snapshot create", fs.Args()...); err != nil {
		return err
	}
	ctx := context.Background()
	b, err := c.box(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	info, err := b.Snapshot(ctx, fs.Arg(1), libbox.SnapshotOptions{Memory: *memory})
	if err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, info.Name)
	return nil
}

func (c *cli) snapshotLs(args []string) error {
	fs := newFlags("snapshot ls", "")
	asJSON := fs.Bool("json", false, "JSON output")
	if err := parseArgs(fs, args, 0, 0, "takes no arguments"); err != nil {
		return err
	}
	return listing(c, *asJSON, (*libbox.Runtime).Snapshots, nil,
		"NAME\tBOX\tISOLATION\tIMAGE\tPARENT\tSIZE\tUSED BY\tCREATED",
		func(s libbox.SnapshotInfo) string {
			box := s.BoxName
			if box == "" {
				box = s.Box[:12]
			}
			iso := s.Isolation
			if s.Memory {
				iso += "+memory"
			}
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%.1f MB\t%s\t%s", s.Name, box, iso, s.Image,
				dash(s.Parent), float64(s.Size)/1e6, dash(strings.Join(s.UsedBy, ", ")), ago(s.CreatedAt))
		})
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *cli) snapshotRm(args []string) error {
	fs := newFlags("snapshot rm", "NAME...")
	force := fs.Bool("f", false, "remove the name even while boxes or snapshots sit on it (its layer stays until they are gone)")
	if err := parseArgs(fs, args, 1, -1, "want at least one NAME"); err != nil {
		return err
	}
	if err := checkNames("snapshot rm", fs.Args()...); err != nil {
		return err
	}
	rt, err := c.runtime()
	if err != nil {
		return err
	}
	var first error
	for _, name := range fs.Args() {
		if err := rt.RemoveSnapshot(context.Background(), name, *force); err != nil {
			fmt.Fprintf(c.stderr, "box: snapshot rm %s: %s\n", name, oneLine(err.Error()))
			first = exitError{125}
			continue
		}
		fmt.Fprintln(c.stdout, name)
	}
	return first
}

func (c *cli) restore(args []string) error {
	fs := newFlags("restore", "BOX SNAPSHOT")
	if err := parseArgs(fs, args, 2, 2, "want BOX SNAPSHOT"); err != nil {
		return err
	}
	if err := checkNames("restore", fs.Args()...); err != nil {
		return err
	}
	ctx := context.Background()
	b, err := c.box(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	return b.Restore(ctx, fs.Arg(1))
}

func (c *cli) export(args []string) error {
	fs := newFlags("export", "BOX DIR")
	if err := parseArgs(fs, args, 2, 2, "want BOX DIR"); err != nil {
		return err
	}
	if err := checkNames("export", fs.Arg(0)); err != nil {
		return err
	}
	dir, err := filepath.Abs(fs.Arg(1))
	if err != nil {
		return usageErr("export: %v", err)
	}
	sigs := catchSignals()
	defer sigs.release()
	b, err := c.box(sigs.ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	if err := b.Export(sigs.ctx, dir); err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, "oci-layout:"+dir)
	return nil
}
