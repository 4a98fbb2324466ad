package main

// doctor: what this host needs to run boxes.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/libbox/libbox/libbox"
)

func (c *cli) doctor(args []string) error {
	fs := newFlags("doctor", "")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parseArgs(fs, args, 0, 0, "takes no arguments"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := libbox.Doctor(ctx, libbox.Options{})
	if *asJSON {
		if err := c.printJSON(r); err != nil {
			return err
		}
	} else {
		for _, ch := range r.Checks {
			fmt.Fprintf(c.stdout, "%-4s  %-8s  %s\n", ch.Status, ch.Name, ch.Detail)
			if ch.Status != libbox.CheckOK && ch.Fix != "" {
				fmt.Fprintf(c.stdout, "                fix: %s\n", ch.Fix)
			}
		}
		verdict := "boxes of the default isolation (%s) can run here"
		if !r.Ready {
			verdict = "boxes of the default isolation (%s) cannot run here"
		}
		fmt.Fprintf(c.stdout, "\n"+verdict+"; isolations that can run: %s\n", r.Isolation, orNone(r.Runs))
	}
	if !r.Ready {
		return exitError{1}
	}
	return nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
