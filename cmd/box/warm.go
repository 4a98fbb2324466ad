package main

import (
	"fmt"
	"time"

	"github.com/libbox/libbox/libbox"
)

// warm builds the VM template of an image: later VM boxes of that image,
// CPUs and memory start by restoring it instead of booting.
func (c *cli) warm(args []string) error {
	fs := newFlags("warm", "IMAGE")
	cpus := fs.Int("cpus", 0, "CPUs of the boxes that will use it")
	memory := fs.Int("memory", 0, "memory in MiB of the boxes that will use it")
	platform := fs.String("platform", "", "os/arch[/variant] of a multi-arch image (default: the host's)")
	rt, err := c.imageArg(fs, args)
	if err != nil {
		return err
	}
	sigs := catchSignals()
	defer sigs.release()
	t0 := time.Now()
	err = rt.Warm(sigs.ctx, fs.Arg(0), libbox.BoxOptions{CPUs: *cpus, MemoryMiB: *memory, Platform: *platform})
	if s := sigs.handOff(); s != 0 {
		return exitError{128 + int(s)}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "VM template of %s ready (%s)\n", fs.Arg(0), time.Since(t0).Round(time.Millisecond))
	return nil
}
