package agent

import (
	"testing"
	"time"

	"github.com/libbox/libbox/guest/agentpb"
)

// The exit event carries the exec's steps in order, and Info the boot
// stages (the bench's stage breakdowns are built from both).
func TestExecAndBootTimes(t *testing.T) {
	mainAt := time.Now()
	h := newHarness(t, Options{BootTimes: map[string]time.Time{"main": mainAt}})
	ctx := within(t, 30*time.Second)
	r, err := run(ctx, h.client, &agentpb.ExecStart{Args: []string{"/bin/sh", "-c", "echo x"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	x := r.exit.GetTimes()
	steps := []struct {
		name string
		ns   int64
	}{
		{"received", x.GetReceived()}, {"dequeued", x.GetDequeued()}, {"spawned", x.GetSpawned()},
		{"first output", x.GetFirstOutput()}, {"exit sent", x.GetExitSent()},
	}
	for i, s := range steps {
		if s.ns == 0 {
			t.Fatalf("%s not recorded: %v", s.name, x)
		}
		if i > 0 && s.ns < steps[i-1].ns {
			t.Fatalf("%s (%d) before %s (%d)", s.name, s.ns, steps[i-1].name, steps[i-1].ns)
		}
	}
	if x.GetExited() < x.GetSpawned() || x.GetExited() > x.GetExitSent() {
		t.Fatalf("exit seen at %d, outside spawned %d .. sent %d", x.GetExited(), x.GetSpawned(), x.GetExitSent())
	}

	// No output: no first-output time.
	r, err = run(ctx, h.client, &agentpb.ExecStart{Args: []string{"/bin/true"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.exit.GetTimes().GetFirstOutput(); got != 0 {
		t.Fatalf("first output %d for a silent process", got)
	}

	info, err := h.client.Info(ctx, &agentpb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	boot := info.GetBootUnixNanos()
	if boot["main"] != mainAt.UnixNano() || boot["runtime"] < boot["main"] {
		t.Fatalf("boot times %v (main %d)", boot, mainAt.UnixNano())
	}
}
