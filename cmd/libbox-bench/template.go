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
	stages := map[string][]float64{}
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
		t1 := time.Now()
		err = b.Start(ctx)
		t2 := time.Now()
		if err == nil {
			err = runOne(b, "true")
		}
		ms := float64(time.Since(t).Microseconds()) / 1000
		if err == nil {
			restoreStages(ctx, b, stages, t1.Sub(t), time.Since(t2), time.Since(t))
		}
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
	for k, v := range stages {
		e.stage("start.vm_restore", k, median(v))
	}
	e.metric("start.vm_restore.first_exec_ms", median(rs))
	e.metric("start.vm_restore.qemu_bare_ms", median(bare))
	e.ratioAtMost("vm restore create->first exec / bare qemu boot", 0.5, perRound)
	return nil
}

// restoreStages adds one restore's breakdown to stages (µs by name): the
// runtime's steps of Start, the QEMU backend's within "launch", and the
// first exec.
func restoreStages(ctx context.Context, b *libbox.Box, stages map[string][]float64, create, exec, total time.Duration) {
	add := func(k string, d time.Duration) { stages[k] = append(stages[k], float64(d.Microseconds())) }
	add("1_create", create)
	if st, err := b.Stats(ctx); err == nil {
		for _, s := range st.Boot {
			switch s.Name {
			case "prepare":
				add("2_prepare (image, agent)", s.Duration)
			case "launch":
				add("3_launch (backend Start)", s.Duration)
			case "agent":
				add("4_agent (dial, handshake, ping)", s.Duration)
			case "identify":
				add("5_identify (seed, clock, hostname)", s.Duration)
			}
		}
	}
	if us, ok := b.Info().Backend["start_us"].(map[string]int64); ok {
		for k, v := range us {
			add("3."+k, time.Duration(v)*time.Microsecond)
		}
	}
	add("6_first exec", exec)
	add("7_total", total)
}
