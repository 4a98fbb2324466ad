package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/libbox"
)

func init() { register("churn", benchChurn) }

var (
	churnSandbox = flag.Int("churn-sandbox", 300, "churn: sandbox boxes (64 in flight)")
	churnVM      = flag.Int("churn-vm", 16, "churn: VM boxes (8 in flight)")
)

// benchChurn runs many short-lived boxes at once, each create -> start ->
// 10 concurrent `true` execs -> remove, and reports boxes per second and
// the CPU time per box (this process and every process it reaped: agents,
// QEMU, what they ran).
func benchChurn(ctx context.Context, e *env) error {
	if e.has(libbox.IsolationSandbox) && *churnSandbox > 0 {
		if err := churn(ctx, e, libbox.IsolationSandbox, *churnSandbox, 64); err != nil {
			return err
		}
	}
	if e.has(libbox.IsolationVM) && *churnVM > 0 {
		if err := churn(ctx, e, libbox.IsolationVM, *churnVM, 8); err != nil {
			return err
		}
	}
	return nil
}

func churn(ctx context.Context, e *env, iso string, total, inFlight int) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	one := func() error {
		b, err := e.rt.Create(ctx, libbox.BoxOptions{Isolation: iso})
		if err != nil {
			return err
		}
		err = startAndRun(ctx, b)
		if rerr := e.rt.Remove(context.WithoutCancel(ctx), b.ID(), true); err == nil {
			err = rerr
		}
		return err
	}
	cpu0 := cpuTimeAll()
	var failed atomic.Int64
	var firstErr atomic.Value
	t := time.Now()
	_, err := concurrent(total, inFlight, func() error {
		if err := one(); err != nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, err)
		}
		return nil
	})
	elapsed := time.Since(t)
	cpu := cpuTimeAll() - cpu0
	if err != nil {
		return err
	}
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("churn %s: %d of %d boxes failed, first: %v", iso, f, total, firstErr.Load())
	}
	e.metric("churn."+iso+".boxes_per_s", float64(total)/elapsed.Seconds())
	e.metric("churn."+iso+".cpu_ms_per_box", float64(cpu.Microseconds())/1000/float64(total))
	return nil
}

// startAndRun starts b and runs 10 `true` at once in it.
func startAndRun(ctx context.Context, b *libbox.Box) error {
	if err := b.Start(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := runOne(b, "true"); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return nil
}

// cpuTime is the user + system time of this process and of every child
// it reaped: what a figure that adds the processes it measures by pid
// (cpuPerCall) or compares with another process's own (the binding and C
// ABI comparisons) must count.
func cpuTime() time.Duration {
	var total time.Duration
	for _, who := range []int{unix.RUSAGE_SELF, unix.RUSAGE_CHILDREN} {
		var ru unix.Rusage
		if unix.Getrusage(who, &ru) == nil {
			total += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return total
}

// cpuTimeAll is cpuTime plus every child still running with the children
// that child reaped: a sandbox box's agent is forked and reaped by the
// runtime's fork server, a child of this process that lives until the
// runtime closes, so start and churn figures need it. Between two samples
// a child that was reaped meanwhile is counted once (its running total
// leaves the sum as its reaped total enters RUSAGE_CHILDREN).
func cpuTimeAll() time.Duration {
	total := cpuTime()
	kids, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", os.Getpid()))
	for _, k := range kids {
		b, _ := os.ReadFile(k)
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			u, s := procCPUSplit(pid)
			total += u + s
		}
	}
	return total
}
