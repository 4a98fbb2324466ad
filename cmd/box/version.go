package main

// version.

import (
	"fmt"

	"github.com/libbox/libbox/libbox"
)

func (c *cli) version(args []string) error {
	fmt.Fprintf(c.stdout, "box %s\n", libbox.Version)
	return nil
}
