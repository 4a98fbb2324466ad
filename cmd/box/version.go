package main

// version.

import (
	"fmt"

	"github.com/libbox/libbox/libbox"
)

func (c *cli) version(args []string) error {
	fs := newFlags("version", "")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErr("version: takes no arguments")
	}
	fmt.Fprintf(c.stdout, "box %s\n", libbox.Version)
	return nil
}
