package sandbox_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/internal/testutil"
	"github.com/libbox/libbox/libbox"
)

// TestAgentServesAtPidsLimit: while the box's processes hold it at its
// pids limit, the agent still serves: the spawn thread alone joins the
// box's pids group, so the agent's own threads are not counted (an agent
// that shared the box's budget, with 48 threads reserved at boot, died
// here when requests blocked more threads than that). An exec at the limit
// fails as Unavailable, 64 concurrent file calls (reads of a FIFO, which
// must not block) are answered, and once the holder is killed execs work
// again.
func TestAgentServesAtPidsLimit(t *testing.T) {
	requireSandbox(t)
	probeDir := buildProbe(t)
	rt, err := libbox.Open(libbox.Options{Home: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	b, err := rt.Create(ctx(t, 60*time.Second), libbox.BoxOptions{Isolation: libbox.IsolationSandbox,
		Volumes: []libbox.Volume{{HostPath: probeDir, BoxPath: "/probe", ReadOnly: true}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Remove(context.Background(), b.ID(), true) })
	if err := b.Start(ctx(t, 60*time.Second)); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (libbox.Result, error) {
		return b.Run(ctx(t, 60*time.Second), libbox.Command{Args: args})
	}
	if r, err := run("mkfifo", "/fifo"); err != nil || r.ExitCode != 0 {
		t.Fatalf("mkfifo: %v %d %q", err, r.ExitCode, r.Stderr)
	}
	how := limitHow(b, "pids")
	if !strings.Contains(how, "spawn thread") {
		testutil.SkipOrFail(t, "the box's pids limit (%s) has no group the agent stays out of: run as root, or delegate a cgroup with the pids controller to this user", how)
	}
	const readers = 64
	t.Logf("pids limit: %s", how)

	t0 := time.Now()
	filled := &lineWaiter{want: []byte("filled: "), seen: make(chan struct{})}
	holder, err := b.Exec(ctx(t, 5*time.Minute), libbox.Command{Args: []string{"/probe/probe", "fill"}, Stderr: filled})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-filled.seen:
	case <-holder.Done():
		st, err := holder.Wait(context.Background())
		t.Fatalf("the holder ended before the limit: %+v %v %q", st, err, filled.text())
	case <-time.After(3 * time.Minute):
		t.Fatal("the box did not reach its pids limit in 3 minutes")
	}
	t.Logf("holder: %s (%.1fs)", strings.TrimSpace(filled.text()), time.Since(t0).Seconds())

	// At the limit: an exec fails (nothing can be forked), and does so
	// with an error, not a hang.
	if r, err := run("true"); err == nil {
		t.Fatalf("an exec at the pids limit ran: exit %d", r.ExitCode)
	} else if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "process limit") {
		t.Fatalf("exec at the limit: %v, want Unavailable saying the box is at its process limit", err)
	}
	// Concurrent reads of a FIFO nobody writes: each is refused at once
	// (an agent that opened it blocking would hold a thread per read).
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := b.ReadFile(ctx(t, 3*time.Minute), "/fifo")
			errs <- err
		}()
	}
	// The agent answers meanwhile.
	ps, err := b.Processes(ctx(t, 30*time.Second))
	if err != nil {
		t.Fatalf("processes at the limit: %v", err)
	}
	if len(ps) == 0 {
		t.Fatal("processes at the limit: none listed")
	}
	if _, err := b.ReadFile(ctx(t, 30*time.Second), "/etc/passwd"); err != nil {
		t.Fatalf("read a file at the limit: %v", err)
	}

	t.Logf("answered at the limit (%.1fs)", time.Since(t0).Seconds())
	holder.Cancel() // kills its process group: every sleep it started
	if _, err := holder.Wait(ctx(t, 60*time.Second)); err == nil {
		t.Log("holder exited cleanly after Cancel")
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("a read of the FIFO ended with %v, want its not-a-regular-file error", err)
		}
	}
	// Below the limit again.
	var r libbox.Result
	for deadline := time.Now().Add(60 * time.Second); ; {
		r, err = run("true")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // the killed processes are still being reaped
	}
	if err != nil || r.ExitCode != 0 {
		t.Fatalf("exec after the holder was killed: %v %d %q", err, r.ExitCode, r.Stderr)
	}
	t.Logf("below the limit (%.1fs)", time.Since(t0).Seconds())
	if r, err := run("echo", "alive"); err != nil || string(r.Stdout) != "alive\n" {
		t.Fatalf("box unusable after the limit: %q %v", r.Stdout, err)
	}
	if !b.Running() {
		t.Fatal("the box stopped")
	}
}

// lineWaiter is a Stderr that closes seen once want was written.
type lineWaiter struct {
	want []byte
	seen chan struct{}
	mu   sync.Mutex
	buf  bytes.Buffer // guarded by mu
	once sync.Once
}

func (w *lineWaiter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if bytes.Contains(w.buf.Bytes(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *lineWaiter) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
