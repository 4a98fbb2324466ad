package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libbox/libbox/libbox"
)

type stressResult struct {
	Execs     int64               `json:"execs"`
	Failed    int64               `json:"failed"`
	Hung      int64               `json:"hung"`
	MaxMs     float64             `json:"max_ms"`
	ByBackend map[string][3]int64 `json:"by_backend"` // execs, failed, hung
}

// runStress runs n execs per backend at concurrency cycling 1..256, each
// expected to print its own token; an exec that does not settle in 30 s
// is hung.
func runStress(out string, n int, isolations []string) error {
	rt, _, done, err := openRuntime("libbox-stress-")
	if err != nil {
		return err
	}
	defer done()
	res := stressResult{ByBackend: map[string][3]int64{}}
	var maxUs atomic.Int64
	for _, iso := range isolations {
		ctx := context.Background()
		b, err := rt.Create(ctx, libbox.BoxOptions{Isolation: iso})
		if err == nil {
			err = b.Start(ctx)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "stress: %s unavailable: %v\n", iso, err)
			continue
		}
		var done, failed, hung atomic.Int64
		levels := []int{1, 2, 4, 8, 16, 32, 64, 128, 256}
		for li := 0; done.Load() < int64(n); li = (li + 1) % len(levels) {
			c := levels[li]
			batch := min(int64(c*4), int64(n)-done.Load())
			var next atomic.Int64
			var wg sync.WaitGroup
			for w := 0; w < c; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > batch {
							return
						}
						id := strconv.FormatInt(done.Load()+i, 10)
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						t := time.Now()
						args := []string{"echo", id}
						if i%50 == 0 {
							args = []string{"sh", "-c", "head -c 100000 /dev/zero | wc -c; echo " + id}
						}
						r, err := b.Run(ctx, libbox.Command{Args: args})
						el := time.Since(t)
						cancel()
						if us := el.Microseconds(); us > maxUs.Load() {
							maxUs.Store(us)
						}
						want := id + "\n"
						if len(args) == 3 {
							want = "100000\n" + id + "\n"
						}
						switch {
						case ctx.Err() != nil && err != nil:
							hung.Add(1)
							failed.Add(1)
						case err != nil || r.ExitCode != 0 || string(r.Stdout) != want:
							failed.Add(1)
							fmt.Fprintf(os.Stderr, "stress %s exec %s: %v exit %d out %q\n", iso, id, err, r.ExitCode, r.Stdout)
						}
					}
				}()
			}
			wg.Wait()
			done.Add(batch)
		}
		_ = rt.Remove(ctx, b.ID(), true)
		res.Execs += done.Load()
		res.Failed += failed.Load()
		res.Hung += hung.Load()
		res.ByBackend[iso] = [3]int64{done.Load(), failed.Load(), hung.Load()}
		fmt.Printf("%s: %d execs, %d failed, %d hung\n", iso, done.Load(), failed.Load(), hung.Load())
	}
	res.MaxMs = float64(maxUs.Load()) / 1000
	if err := write(out, &res); err != nil {
		return err
	}
	fmt.Printf("max exec latency %.1f ms\n", res.MaxMs)
	fmt.Printf("%d passed, %d failed\n", res.Execs-res.Failed, res.Failed)
	if res.Failed > 0 {
		os.Exit(1)
	}
	return nil
}
