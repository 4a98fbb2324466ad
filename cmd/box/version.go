package main

// version.

import (
	"fmt"

	"github.com/libbox/libbox/libbox"
)

func (c *cli) version(args []string) error {
	fs := newFlags("version", "")
	if err := parseArgs(fs, args, 0, 0, "takes no arguments"); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "box %s\n", libbox.Version)
	return nil
}
