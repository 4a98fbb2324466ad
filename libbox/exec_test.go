package libbox_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libbox/libbox/internal/testutil"
	"github.com/libbox/libbox/libbox"
)

// settleLimit is the fault table's bound: every pending exec settles
// (exit or error) within it. A miss fails the test instead of hanging it.
const settleLimit = 2 * time.Second

// faultRow records one measured row of the fault table (docs/reliability.md).
func faultRow(t *testing.T, row int, what string, settle time.Duration) {
	t.Helper()
	testutil.FaultRow(t, row, what, settle)
}

// within runs f and fails the test when it does not return within limit.
func within(t *testing.T, limit time.Duration, what string, f func()) time.Duration {
	t.Helper()
	start := time.Now()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
		return time.Since(start)
	case <-time.After(limit):
		t.Fatalf("%s did not return within %s", what, limit)
		return 0
	}
}

// stdinFull starts `sleep 60` with open stdin and a writer that blocks on
// flow control (sleep never reads). The writer's result arrives on the
// returned channel once it gives up.
func stdinFull(t *testing.T, ctx context.Context, b *libbox.Box, tty bool) (*libbox.Process, <-chan error) {
	t.Helper()
	p, err := b.Exec(ctx, libbox.Command{Args: []string{"sleep", "60"}, OpenStdin: true, TTY: tty})
	if err != nil {
		t.Fatal(err)
	}
	werr := make(chan error, 1)
	go func() {
		buf := make([]byte, 1<<20)
		for i := 0; i < 64; i++ {
			if _, err := p.Write(buf); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	time.Sleep(300 * time.Millisecond) // let the pipe and the windows fill
	select {
	case err := <-werr:
		t.Fatalf("stdin of a process that never reads took 64 MiB (%v)", err)
	default:
	}
	return p, werr
}

// controlWhileStdinFull is the fault table's row 1 for the Go API: signal,
// resize, close-stdin and cancel of a process whose stdin is full return at
// once and the process (and its blocked writer) settle.
func controlWhileStdinFull(t *testing.T, ctx context.Context, b *libbox.Box, backend string) {
	for _, ctl := range []string{"signal", "resize", "close-stdin", "cancel"} {
		p, werr := stdinFull(t, ctx, b, false)
		settle := within(t, settleLimit, ctl+" with stdin full", func() {
			var err error
			switch ctl {
			case "signal":
				err = p.Signal(syscall.SIGTERM)
			case "resize":
				if err = p.Resize(40, 100); errors.Is(err, libbox.ErrFailedPrecondition) {
					err = p.Signal(syscall.SIGTERM)
				} else {
					t.Errorf("resize without a terminal: want FailedPrecondition, got %v", err)
				}
			case "close-stdin":
				if err = p.CloseStdin(); err == nil {
					err = p.Signal(syscall.SIGTERM)
				}
			case "cancel":
				p.Cancel()
			}
			if err != nil {
				t.Errorf("%s: %v", ctl, err)
			}
			st, err := p.Wait(ctx)
			switch ctl {
			case "cancel":
				if !errors.Is(err, libbox.ErrCanceled) {
					t.Errorf("cancel: Wait = %+v, %v; want Canceled", st, err)
				}
			default:
				if err != nil || st.Signal != int(syscall.SIGTERM) {
					t.Errorf("%s: Wait = %+v, %v; want death by SIGTERM", ctl, st, err)
				}
			}
			if err := <-werr; err == nil || !(errors.Is(err, libbox.ErrFailedPrecondition) || errors.Is(err, libbox.ErrCanceled)) {
				t.Errorf("%s: the blocked Write returned %v; want a FailedPrecondition or Canceled error", ctl, err)
			}
		})
		faultRow(t, 1, "go "+ctl+" with stdin full ("+backend+")", settle)
	}
}

func TestControlWhileStdinFull(t *testing.T) {
	rt := openRT(t, "")
	b := startBox(t, rt, libbox.BoxOptions{AutoRemove: true})
	ctx := ctxT(t, time.Minute)
	controlWhileStdinFull(t, ctx, b, "sandbox")
	// A terminal's input fills too; resize still gets through.
	p, werr := stdinFull(t, ctx, b, true)
	within(t, settleLimit, "resize of a tty with stdin full", func() {
		if err := p.Resize(40, 100); err != nil {
			t.Error(err)
		}
		p.Cancel()
		<-werr
		_, _ = p.Wait(ctx)
	})
}

// stopUnderExec spawns `sleep 60`, waits delay, then stops the box (or
// force-removes it); the exec must always end with the one documented
// outcome: an Unavailable error saying the box was stopped.
func checkStopped(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, libbox.ErrUnavailable) || !strings.Contains(err.Error(), "was stopped while") {
		t.Fatalf("%s: want Unavailable \"box … was stopped while …\", got %v", what, err)
	}
}

func TestStopUnderExec(t *testing.T) {
	rt := openRT(t, "")
	ctx := ctxT(t, 5*time.Minute)
	rounds := 200
	if testing.Short() {
		rounds = 20
	}
	var b *libbox.Box
	for i := 0; i < rounds; i++ {
		if b == nil {
			b = startBox(t, rt, libbox.BoxOptions{})
		} else if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
		p, err := b.Exec(ctx, libbox.Command{Args: []string{"sleep", "60"}})
		if err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(i%51) * time.Millisecond
		time.Sleep(delay)
		remove := i%4 == 3
		if remove {
			err = rt.Remove(ctx, b.ID(), true)
			b = nil
		} else {
			err = b.Stop(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		var werr error
		within(t, settleLimit, "Wait after the stop", func() { _, werr = p.Wait(ctx) })
		checkStopped(t, "round "+strconv.Itoa(i)+" (delay "+delay.String()+")", werr)
	}
	if b != nil {
		_ = rt.Remove(ctx, b.ID(), true)
	}
}

// TestVMExecControl is the VM side of row 1 and of the stop rule, sharing
// boots: 2 boots, each stopped under 100 execs spawned 0–50 ms before the
// stop (200 spawn-then-stop pairs).
func TestVMExecControl(t *testing.T) {
	testutil.RequireQEMU(t)
	home := t.TempDir()
	removeAllOnCleanup(t, home)
	rt := openRT(t, home)
	ctx := ctxT(t, 10*time.Minute)
	b, err := rt.Create(ctx, libbox.BoxOptions{Isolation: libbox.IsolationVM})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		if errors.Is(err, libbox.ErrUnsupported) {
			t.Skipf("no VM on this host: %v", err)
		}
		t.Fatal(err)
	}
	controlWhileStdinFull(t, ctx, b, "vm")
	boots, per := 2, 100
	if testing.Short() {
		boots = 1
	}
	for boot := 0; boot < boots; boot++ {
		if boot > 0 {
			if err := b.Start(ctx); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		t0 := time.Now()
		spawned := 0
		var mu sync.Mutex
		for i := 0; i < per; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Until(t0.Add(time.Duration(i) * 50 * time.Millisecond / time.Duration(per))))
				p, err := b.Exec(ctx, libbox.Command{Args: []string{"sleep", "60"}})
				if err != nil {
					// Still spawning when the stop began (or after it ended).
					if !errors.Is(err, libbox.ErrFailedPrecondition) {
						checkStopped(t, "exec in flight", err)
					}
					return
				}
				mu.Lock()
				spawned++
				mu.Unlock()
				_, werr := p.Wait(ctx)
				checkStopped(t, "exec spawned before the stop", werr)
			}()
		}
		time.Sleep(time.Until(t0.Add(50 * time.Millisecond)))
		if err := b.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		within(t, settleLimit, "every Wait after the stop", wg.Wait)
		t.Logf("boot %d: %d of %d execs spawned before the stop", boot, spawned, per)
	}
	if err := rt.Remove(ctx, b.ID(), true); err != nil {
		t.Fatal(err)
	}
}

// firstWrite is a writer that reports its first write.
type firstWrite struct {
	mu    sync.Mutex
	buf   []byte
	first chan struct{}
}

func (w *firstWrite) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) == 0 && len(b) > 0 {
		close(w.first)
	}
	w.buf = append(w.buf, b...)
	return len(b), nil
}

// slowWriter takes 50 ms per write.
type slowWriter struct{ w io.Writer }

func (s slowWriter) Write(b []byte) (int, error) {
	time.Sleep(50 * time.Millisecond)
	return s.w.Write(b)
}

// execDone runs cmd, a process that ends within its batch time, and fails
// unless it was done when Exec returned.
func execDone(t *testing.T, ctx context.Context, b *libbox.Box, what string, cmd libbox.Command) *libbox.Process {
	t.Helper()
	p, err := b.Exec(ctx, cmd)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	default:
		t.Fatal(what + "a process that ends within its batch time was still running when Exec returned")
	}
	return p
}

// Command.Batch: a short process comes back whole with its start (its pid
// known, its output and exit delivered when Exec returns); a long one still
// streams, its pid known when Exec returns too.
func TestExecBatch(t *testing.T) {
	rt := openRT(t, "")
	b := startBox(t, rt, libbox.BoxOptions{AutoRemove: true})
	ctx := ctxT(t, 2*time.Minute)

	p := execDone(t, ctx, b, "", libbox.Command{Args: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}, Batch: time.Minute})
	st, err := p.Wait(ctx)
	out, errOut := p.Output()
	if err != nil || st.ExitCode != 3 || string(out) != "out\n" || string(errOut) != "err\n" || p.Pid() <= 0 {
		t.Fatalf("batched: pid %d, %+v %v, %q %q", p.Pid(), st, err, out, errOut)
	}

	// WriteInExec: the caller's writers get a short process's output
	// before Exec returns, and the process is done by then. The writers
	// are slow, so that a receiving goroutine would not be done yet.
	var wout, werr bytes.Buffer
	p = execDone(t, ctx, b, "WriteInExec: ", libbox.Command{Args: []string{"sh", "-c", "echo out; echo err >&2; exit 4"}, Batch: time.Minute,
		Stdout: slowWriter{&wout}, Stderr: slowWriter{&werr}, WriteInExec: true})
	if wout.String() != "out\n" || werr.String() != "err\n" {
		t.Fatalf("WriteInExec: when Exec returned the writers had %q %q", wout.String(), werr.String())
	}
	if st, err := p.Wait(ctx); err != nil || st.ExitCode != 4 {
		t.Fatalf("WriteInExec: %+v %v", st, err)
	}

	w := &firstWrite{first: make(chan struct{})}
	p, err = b.Exec(ctx, libbox.Command{
		Args:   []string{"sh", "-c", "echo first; while [ ! -e /tmp/batch-gate ]; do sleep 0.01; done; echo second"},
		Batch:  50 * time.Millisecond,
		Stdout: w,
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.Pid() <= 0 {
		t.Fatalf("pid %d after Exec", p.Pid())
	}
	select {
	case <-w.first: // streamed while the process waits for the gate
	case <-p.Done():
		t.Fatal("the process ended before its gate opened")
	case <-ctx.Done():
		t.Fatal("no output from a process that outlived its batch time")
	}
	sh(t, b, "touch /tmp/batch-gate")
	if st, err := p.Wait(ctx); err != nil || st.ExitCode != 0 || string(w.buf) != "first\nsecond\n" {
		t.Fatalf("streamed: %+v %v %q", st, err, w.buf)
	}

	if _, err := b.Exec(ctx, libbox.Command{Args: []string{"true"}, Batch: -time.Second}); !errors.Is(err, libbox.ErrInvalidArgument) {
		t.Fatalf("negative batch: %v", err)
	}
}
