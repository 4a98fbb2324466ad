package main

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/libbox/libbox/libbox"
)

func init() { register("fs", benchFS) }

// benchFS times writing and reading a 1 MiB file through the file API and
// through the exec route (`cat` with stdin / stdout), median of 9 rounds
// each, and the API-over-exec ratios per round (target: the file API at
// least twice as fast).
func benchFS(ctx context.Context, e *env) error {
	for _, iso := range []string{libbox.IsolationSandbox, libbox.IsolationVM} {
		if !e.has(iso) {
			continue
		}
		if err := fsRoutes(ctx, e, iso); err != nil {
			return err
		}
	}
	return nil
}

func fsRoutes(ctx context.Context, e *env, iso string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	b, done, err := e.box(ctx, libbox.BoxOptions{Isolation: iso})
	if err != nil {
		return err
	}
	defer done()
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	apiWrite := func() error { return b.WriteFile(ctx, "/tmp/bench-api", data, libbox.WriteOptions{}) }
	apiRead := func() error {
		got, err := b.ReadFile(ctx, "/tmp/bench-api")
		if err == nil && len(got) != len(data) {
			err = fmt.Errorf("read %d bytes, want %d", len(got), len(data))
		}
		return err
	}
	execWrite := func() error {
		r, err := b.Run(ctx, libbox.Command{Args: []string{"sh", "-c", "cat > /tmp/bench-exec"}, Stdin: bytes.NewReader(data)})
		if err == nil && r.ExitCode != 0 {
			err = fmt.Errorf("exec write: exit %d: %s", r.ExitCode, r.Stderr)
		}
		return err
	}
	execRead := func() error {
		r, err := b.Run(ctx, libbox.Command{Args: []string{"cat", "/tmp/bench-exec"}})
		if err == nil && len(r.Stdout) != len(data) {
			err = fmt.Errorf("exec read %d bytes, want %d", len(r.Stdout), len(data))
		}
		return err
	}
	const rounds = 9
	times := map[string][]float64{}
	var writeRatio, readRatio []float64
	for i := 0; i < rounds; i++ {
		// Interleaved, so a slow moment of the machine hits both routes.
		for _, step := range []struct {
			name string
			fn   func() error
		}{{"write", apiWrite}, {"exec_write", execWrite}, {"read", apiRead}, {"exec_read", execRead}} {
			t := time.Now()
			if err := step.fn(); err != nil {
				return fmt.Errorf("fs %s %s: %w", iso, step.name, err)
			}
			times[step.name] = append(times[step.name], float64(time.Since(t).Microseconds())/1000)
		}
		writeRatio = append(writeRatio, times["exec_write"][i]/times["write"][i])
		readRatio = append(readRatio, times["exec_read"][i]/times["read"][i])
	}
	for name, v := range times {
		e.metric(fmt.Sprintf("fs.%s.%s_1mib_ms", iso, name), median(v))
	}
	e.ratioAtLeast(fmt.Sprintf("fs %s: exec cat / file API, write 1 MiB", iso), 2.0, writeRatio)
	e.ratioAtLeast(fmt.Sprintf("fs %s: exec cat / file API, read 1 MiB", iso), 2.0, readRatio)
	return nil
}
