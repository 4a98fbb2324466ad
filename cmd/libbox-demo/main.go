// Command libbox-demo runs the concurrent-exec seed pattern on the builtin
// image: 4 concurrent echos, then 100, printing results and timings.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/libbox/libbox/libbox"
)

func main() {
	isolation := flag.String("isolation", envOr("LIBBOX_ISOLATION", "vm"), "vm or sandbox")
	n := flag.Int("n", 100, "size of the second wave")
	flag.Parse()
	if err := run(*isolation, *n); err != nil {
		fmt.Fprintln(os.Stderr, "libbox-demo:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func run(isolation string, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The default home ($LIBBOX_HOME or ~/.local/share/libbox) keeps the
	// image and the accelerator probe cached between runs; the box itself
	// is removed when it stops.
	rt, err := libbox.Open(libbox.Options{})
	if err != nil {
		return err
	}
	defer rt.Close()
	t0 := time.Now()
	box, err := rt.Create(ctx, libbox.BoxOptions{Image: "busybox", Isolation: isolation, AutoRemove: true})
	if err != nil {
		return err
	}
	if err := box.Start(ctx); err != nil {
		return err
	}
	fmt.Printf("box %s (%s) ready in %v\n", box.ID(), isolation, time.Since(t0).Round(time.Millisecond))

	wave := func(tasks []string) error {
		t := time.Now()
		results := make([]string, len(tasks))
		errs := make([]error, len(tasks))
		var wg sync.WaitGroup
		for i, task := range tasks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := box.Run(ctx, libbox.Command{Args: []string{"echo", "task " + task}})
				if err == nil && (r.ExitCode != 0 || string(r.Stdout) != "task "+task+"\n") {
					err = fmt.Errorf("task %s: exit %d, stdout %q", task, r.ExitCode, r.Stdout)
				}
				results[i], errs[i] = string(r.Stdout), err
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		if len(tasks) <= 8 {
			for _, r := range results {
				fmt.Print("  ", r)
			}
		}
		fmt.Printf("%d concurrent execs: all correct in %v\n", len(tasks), time.Since(t).Round(time.Millisecond))
		return nil
	}
	if err := wave([]string{"A", "B", "C", "D"}); err != nil {
		return err
	}
	tasks := make([]string, n)
	for i := range tasks {
		tasks[i] = fmt.Sprint(i)
	}
	if err := wave(tasks); err != nil {
		return err
	}
	return box.Stop(ctx)
}
