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
	"github.com/libbox/libbox/internal/procstat"
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

// TestMonitorSlack: SetMonitorSlack finds the runtime's monitor thread (the
// thread that keeps sleeping in nanosleep while a goroutine runs) and
// changes only its slack.
func TestMonitorSlack(t *testing.T) {
	mon, err := procstat.MonitorThread(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	slackOf := func(tid string) string {
		b, err := os.ReadFile("/proc/" + tid + "/timerslack_ns")
		if err != nil {
			return "gone"
		}
		return strings.TrimSpace(string(b))
	}
	before := map[string]string{}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range tasks {
		before[e.Name()] = slackOf(e.Name())
	}
	const coarse = 7 * time.Millisecond
	if err := SetMonitorSlack(coarse); err != nil {
		if errors.Is(err, os.ErrPermission) {
			t.Skipf("setting the timer slack of other threads needs CAP_SYS_NICE: run the tests as root (%v)", err)
		}
		t.Fatal(err)
	}
	monName := strconv.Itoa(mon)
	defer func() {
		orig, _ := time.ParseDuration(before[monName] + "ns")
		if err := procstat.SetThreadSlack(mon, orig); err != nil {
			t.Error(err)
		}
	}()
	for tid, was := range before {
		got := slackOf(tid)
		switch {
		case tid == monName && got != strconv.FormatInt(coarse.Nanoseconds(), 10):
			t.Errorf("monitor thread %s: slack %s, want %d", tid, got, coarse.Nanoseconds())
		case tid != monName && got != was && got != "gone":
			t.Errorf("thread %s: slack changed from %s to %s", tid, was, got)
		}
	}

	// While a goroutine runs, the monitor loops sleeping in nanosleep;
	// the runtime's other threads wait in futex or epoll_pwait.
	stop := make(chan struct{})
	spun := make(chan struct{})
	go func() {
		defer close(spun)
		for {
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	want := strconv.Itoa(unix.SYS_NANOSLEEP)
	seen, samples := 0, 200
	for i := 0; i < samples; i++ {
		b, err := os.ReadFile("/proc/self/task/" + monName + "/syscall")
		if err != nil {
			t.Fatalf("monitor thread %d: %v", mon, err)
		}
		if f := strings.Fields(string(b)); len(f) > 0 && f[0] == want {
			seen++
		}
		time.Sleep(time.Millisecond)
	}
	close(stop)
	<-spun
	if seen < samples/2 {
		t.Errorf("thread %d was in nanosleep in %d of %d samples: it is not the runtime's monitor", mon, seen, samples)
	}
}
