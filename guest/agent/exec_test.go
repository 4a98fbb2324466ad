package agent

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libbox/libbox/guest/agentpb"
)

// Info reads the spawner's table of running children while spawns write it.
func TestInfoDuringConcurrentSpawns(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 60*time.Second)
	stop := make(chan struct{})
	var infos atomic.Int64
	var readers sync.WaitGroup
	for i := 0; i < 2; i++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := h.client.Info(ctx, &agentpb.InfoRequest{}); err != nil {
					t.Errorf("info: %v", err)
					return
				}
				infos.Add(1)
			}
		}()
	}
	var wg sync.WaitGroup
	for i := 0; i < 256; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := run(ctx, h.client, &agentpb.ExecStart{Args: []string{"true"}}, nil)
			if err != nil {
				t.Errorf("exec %d: %v", i, err)
				return
			}
			if r.exit.Status != agentpb.Exit_EXITED || r.exit.ExitCode != 0 {
				t.Errorf("exec %d: exit %v", i, r.exit)
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	if infos.Load() == 0 {
		t.Fatal("no Info call completed during the spawns")
	}
	r, err := h.client.Info(ctx, &agentpb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Running != 0 {
		t.Errorf("Info reports %d running after every exec ended", r.Running)
	}
}
