package main

import (
	"context"
	"time"

	"github.com/libbox/libbox/libbox"
	"github.com/libbox/libbox/libbox/qemu"
)

func init() { register("vm_restore", benchVMRestore) }

// benchVMRestore times create → first exec of a VM box restored from its
// template (built first, outside the measurement), interleaved with a
// bare QEMU boot of the same machine and kernel: a restore must beat any
// boot by far.
func benchVMRestore(ctx context.Context, e *env) error {
	if !e.has(libbox.IsolationVM) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	rt, err := libbox.Open(libbox.Options{Home: e.home}) // templates on
	if err != nil {
		return err
	}
	defer rt.Close()
	t := time.Now()
	if err := rt.Warm(ctx, "busybox", libbox.BoxOptions{}); err != nil {
		return err
	}
	e.info("vm_restore.warm_ms", time.Since(t).Round(time.Millisecond).String())
	o, err := libbox.Options{Home: e.home}.WithEnv()
	if err != nil {
		return err
	}
	bareOpts := qemu.Options{Home: o.Home, BootTimeout: o.BootTimeout, Accel: o.Accel, Kernel: o.Kernel, KernelModules: o.KernelModules}
	var bare, rs, perRound []float64
	for r := 0; r < e.rounds; r++ {
		d, err := qemu.BareBoot(ctx, bareOpts)
		if err != nil {
			return err
		}
		t := time.Now()
		b, err := rt.Create(ctx, libbox.BoxOptions{Isolation: libbox.IsolationVM})
		if err != nil {
			return err
		}
		err = b.Start(ctx)
		if err == nil {
			err = runOne(b, "true")
		}
		ms := float64(time.Since(t).Microseconds()) / 1000
		if err == nil && b.Info().Backend["template"] == "" {
			e.info("vm_restore.error", "the box booted instead of restoring its template")
		}
		rt.Remove(context.WithoutCancel(ctx), b.ID(), true)
		if err != nil {
			return err
		}
		bms := float64(d.Microseconds()) / 1000
		bare, rs = append(bare, bms), append(rs, ms)
		perRound = append(perRound, ms/bms)
	}
	e.metric("start.vm_restore.first_exec_ms", median(rs))
	e.metric("start.vm_restore.qemu_bare_ms", median(bare))
	e.ratioAtMost("vm restore create->first exec / bare qemu boot", 0.5, perRound)
	return nil
}
