package main

// ls (ps) and inspect: describing boxes.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/libbox/libbox/libbox"
)

func (c *cli) ls(args []string) error {
	fs := newFlags("ls", "")
	all := fs.Bool("a", false, "all boxes, not only running ones")
	asJSON := fs.Bool("json", false, "JSON output")
	if err := parseArgs(fs, args, 0, 0, "takes no arguments"); err != nil {
		return err
	}
	return listing(c, *asJSON, (*libbox.Runtime).List,
		func(b libbox.BoxInfo) bool { return *all || b.State == libbox.StateRunning },
		"ID\tNAME\tIMAGE\tISOLATION\tSTATE\tCREATED",
		func(b libbox.BoxInfo) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s", b.ID[:12], b.Name, b.Image, b.Isolation, b.State, ago(b.CreatedAt))
		})
}

// listing is the body of a list command: the runtime's items that keep
// allows (all when nil), as JSON (an array, never null) or as a table of
// header and one row per item.
func listing[T any](c *cli, asJSON bool, get func(*libbox.Runtime, context.Context) ([]T, error),
	keep func(T) bool, header string, row func(T) string) error {
	rt, err := c.runtime()
	if err != nil {
		return err
	}
	list, err := get(rt, context.Background())
	if err != nil {
		return err
	}
	shown := []T{}
	for _, v := range list {
		if keep == nil || keep(v) {
			shown = append(shown, v)
		}
	}
	if asJSON {
		return c.printJSON(shown)
	}
	tw := c.table(header)
	for _, v := range shown {
		fmt.Fprintln(tw, row(v))
	}
	return tw.Flush()
}

func ago(t time.Time) string {
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func (c *cli) inspect(args []string) error {
	fs := newFlags("inspect", "BOX")
	if err := parseArgs(fs, args, 1, 1, "want exactly one BOX"); err != nil {
		return err
	}
	if err := checkNames("inspect", fs.Arg(0)); err != nil {
		return err
	}
	b, err := c.box(context.Background(), fs.Arg(0))
	if err != nil {
		return err
	}
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(b.Info())
}
