package agent

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/guest/agentpb"
)

// TestTimerSlackStaysOutOfBoxProcesses: the agent's threads take the
// coarse slack, and a box process still starts with the slack the agent
// was started with.
func TestTimerSlackStaysOutOfBoxProcesses(t *testing.T) {
	orig, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	const coarse = 3 * time.Millisecond
	if err := SetTimerSlack(coarse); err != nil {
		if errors.Is(err, os.ErrPermission) {
			t.Skipf("setting the timer slack of other threads needs CAP_SYS_NICE: run the tests as root (%v)", err)
		}
		t.Fatal(err)
	}
	defer func() {
		if err := SetTimerSlack(time.Duration(orig)); err != nil {
			t.Error(err)
		}
	}()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range tasks {
		f := "/proc/" + e.Name() + "/timerslack_ns"
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread exited
		}
		if got := strings.TrimSpace(string(b)); got != strconv.FormatInt(coarse.Nanoseconds(), 10) {
			t.Errorf("%s = %s, want %d", f, got, coarse.Nanoseconds())
		}
	}

	h := newHarness(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := run(ctx, h.client, &agentpb.ExecStart{Args: []string{"cat", "/proc/self/timerslack_ns"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.exit.GetExitCode() != 0 {
		t.Fatalf("exit %v, stderr %q", r.exit, r.stderr.String())
	}
	if got := strings.TrimSpace(r.stdout.String()); got != strconv.Itoa(orig) {
		t.Errorf("a box process's timer slack is %s, want the agent's starting %d", got, orig)
	}
}
