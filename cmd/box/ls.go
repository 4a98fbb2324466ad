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
	rt, err := c.runtime()
	if err != nil {
		return err
	}
	list, err := rt.List(context.Background())
	if err != nil {
		return err
	}
	shown := []libbox.BoxInfo{} // never null in --json
	for _, b := range list {
		if *all || b.State == libbox.StateRunning {
			shown = append(shown, b)
		}
	}
	if *asJSON {
		return c.printJSON(shown)
	}
	tw := c.table("ID\tNAME\tIMAGE\tISOLATION\tSTATE\tCREATED")
	for _, b := range shown {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", b.ID[:12], b.Name, b.Image, b.Isolation, b.State, ago(b.CreatedAt))
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
