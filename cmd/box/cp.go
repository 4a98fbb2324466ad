package main

// cp: copying between the host and a box, with docker cp's BOX:PATH form.

import (
	"context"
	"strings"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox"
)

func splitBoxPath(s string) (box, path string, ok bool) {
	i := strings.IndexByte(s, ':')
	if i <= 0 || strings.ContainsRune(s[:i], '/') {
		return "", s, false
	}
	return s[:i], s[i+1:], true
}

func (c *cli) cp(args []string) error {
	fs := newFlags("cp", "SRC DST")
	if err := parseArgs(fs, args, 2, 2, "want SRC DST (one of them BOX:PATH)"); err != nil {
		return err
	}
	sb, sp, sok := splitBoxPath(fs.Arg(0))
	db, dp, dok := splitBoxPath(fs.Arg(1))
	if sok == dok {
		return usageErr("cp: exactly one of SRC and DST must be BOX:PATH")
	}
	ctx := context.Background()
	name := sb
	if dok {
		name = db
	}
	if err := checkNames("cp", name); err != nil {
		return err
	}
	b, err := c.box(ctx, name)
	if err != nil {
		return err
	}
	if st := b.Info().State; st != libbox.StateRunning {
		return errdefs.New(errdefs.FailedPrecondition, "box %s is %s: start it with `box start %s`", name, st, name)
	}
	if err := b.Start(ctx); err != nil {
		return err
	}
	if dok {
		_, err = b.CopyIn(ctx, sp, dp)
	} else {
		_, err = b.CopyOut(ctx, sp, dp)
	}
	return err
}
