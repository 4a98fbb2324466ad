package main

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
	"time"

	"github.com/libbox/libbox/libbox"
)

func init() { register("clone", benchClone) }

// benchClone times a clone of a snapshot (create From → start → first exec
// done) against a plain box of the same backend, alternately, and the disk
// a clone wrote by then (its box dir). Targets: clone ≤ 1.2× a plain start.
func benchClone(ctx context.Context, e *env) error {
	for _, iso := range []string{libbox.IsolationSandbox, libbox.IsolationVM} {
		if !e.has(iso) {
			continue
		}
		if err := cloneRounds(ctx, e, iso); err != nil {
			return err
		}
	}
	return nil
}

func cloneRounds(ctx context.Context, e *env, iso string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	src, done, err := e.box(ctx, libbox.BoxOptions{Isolation: iso, ColdBoot: true})
	if err != nil {
		return err
	}
	defer done()
	if _, err := src.Run(ctx, libbox.Command{Args: []string{"sh", "-c", "dd if=/dev/urandom of=/data bs=64k count=64 2>/dev/null"}}); err != nil {
		return err
	}
	name := "bench-clone-" + iso
	if _, err := src.Snapshot(ctx, name, libbox.SnapshotOptions{}); err != nil {
		return err
	}
	defer e.rt.RemoveSnapshot(context.WithoutCancel(ctx), name, true)
	var bytes []float64
	first := func(o libbox.BoxOptions, measure bool) func() error {
		return func() error {
			b, done, err := e.box(ctx, o)
			if err != nil {
				return err
			}
			defer done()
			r, err := b.Run(ctx, libbox.Command{Args: []string{"true"}})
			if err == nil && r.ExitCode != 0 {
				err = fmt.Errorf("first exec: exit %d", r.ExitCode)
			}
			if measure {
				bytes = append(bytes, float64(dirBytes(b.Info().Dir)))
			}
			return err
		}
	}
	n := 5
	if iso == libbox.IsolationVM {
		n = 2
	}
	// Both cold: a clone's disk is never a template's.
	plain, clone, err := pairs(n, 0, first(libbox.BoxOptions{Isolation: iso, ColdBoot: true}, false), first(libbox.BoxOptions{From: name}, true))
	if err != nil {
		return err
	}
	e.metric("clone."+iso+".ms", pct(clone, 0.5)/1000)
	e.metric("clone."+iso+".plain_start_ms", pct(plain, 0.5)/1000)
	e.metric("clone."+iso+".bytes", median(bytes))
	perRound := make([]float64, len(clone))
	for i := range clone {
		perRound[i] = float64(clone[i]) / float64(plain[i])
	}
	e.ratioAtMost("clone."+iso+" / plain start", 1.2, perRound)
	return nil
}

// dirBytes is the disk space the files under dir take.
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			if fi, err := d.Info(); err == nil {
				n += fi.Sys().(*syscall.Stat_t).Blocks * 512
			}
		}
		return nil
	})
	return n
}
