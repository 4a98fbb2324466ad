package bridge_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/bridge"
)

func statusOf(err error) errdefs.Code {
	st, _ := bridge.Status(err)
	return errdefs.Code(st)
}

// drained is what a queue delivered for one tag.
type drained struct {
	out, errb []byte
	exits     int
	late      int // events after the exit
	exit      bridge.ExitInfo
	maxBatch  int // most output bytes of this tag taken by one poll
}

// drain polls q (waiting on its fd) until want exits came, and checks that
// the fd is readable exactly while events wait.
func drain(t *testing.T, q uint64, fd int, want int) map[uint64]*drained {
	t.Helper()
	got := map[uint64]*drained{}
	exits := 0
	deadline := time.Now().Add(90 * time.Second)
	for exits < want {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d exits after 90 s", exits, want)
		}
		fds := &syscall.FdSet{}
		fds.Bits[fd/64] |= 1 << (uint(fd) % 64)
		tv := syscall.Timeval{Sec: 1}
		if n, err := syscall.Select(fd+1, fds, nil, nil, &tv); err != nil || n == 0 {
			continue
		}
		batch := map[uint64]int{}
		n := 0
		err := bridge.QueuePoll(q, 64, func(evs []bridge.Event) {
			n = len(evs)
			for _, e := range evs {
				d := got[e.Tag]
				if d == nil {
					d = &drained{}
					got[e.Tag] = d
				}
				if d.exits > 0 {
					d.late++
				}
				switch e.Kind {
				case bridge.EventStdout:
					d.out = append(d.out, e.Data...)
					batch[e.Tag] += len(e.Data)
				case bridge.EventStderr:
					d.errb = append(d.errb, e.Data...)
					batch[e.Tag] += len(e.Data)
				case bridge.EventExit:
					d.exits++
					d.exit = e.Exit
					exits++
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatal("the queue's fd was readable with no event waiting")
		}
		for tag, b := range batch {
			got[tag].maxBatch = max(got[tag].maxBatch, b)
		}
	}
	return got
}

// TestQueue: queued execs deliver their output then exactly one exit, per
// tag, in order; one exec's untaken output never exceeds the queue limit
// by more than a chunk; bad handles and capacities are refused; closing a
// queue ends a producer's wait (the runtime still closes); every handle
// is gone after (the C, Python and Node tests count fds).
func TestQueue(t *testing.T) {
	requireSandbox(t)
	rt := openRuntime(t)
	cs := &completions{t: t}
	box, _ := createBox(t, cs, rt, `{"isolation": "sandbox"}`)
	c := cs.track("start")
	if err := bridge.Start(box, c.done()); err != nil {
		t.Fatal(err)
	}
	if r := c.wait(t); r.st != 0 {
		t.Fatalf("start: %s %q", errdefs.Code(r.st), r.msg)
	}
	q, fd, err := bridge.QueueOpen()
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			bridge.QueueClose(q)
		}
	})

	for _, r := range []struct {
		name string
		err  error
	}{
		{"poll capacity 0", bridge.QueuePoll(q, 0, func([]bridge.Event) {})},
		{"poll a box handle", bridge.QueuePoll(box, 1, func([]bridge.Event) {})},
		{"release a queue", bridge.Release(q)},
		{"close a box as queue", bridge.QueueClose(box)},
	} {
		if statusOf(r.err) != errdefs.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", r.name, r.err)
		}
	}
	if _, err := bridge.ExecQueued(box, `{"args":["true"]}`, box, 1, false, false, false); statusOf(err) != errdefs.InvalidArgument {
		t.Errorf("exec on a box as queue: %v", err)
	}

	const n, big = 32, 3 << 20
	var execs []uint64
	for i := range n {
		h, err := bridge.ExecQueued(box, fmt.Sprintf(`{"args":["sh","-c","echo %d; echo e%d >&2; exit %d"]}`, i, i, i%4), q, uint64(i), false, false, false)
		if err != nil {
			t.Fatal(err)
		}
		execs = append(execs, h)
	}
	h, err := bridge.ExecQueued(box, fmt.Sprintf(`{"args":["head","-c","%d","/dev/zero"]}`, big), q, n, false, false, false)
	if err != nil {
		t.Fatal(err)
	}
	execs = append(execs, h)
	// Fill the queue past the limit before the first poll.
	time.Sleep(2 * time.Second)
	got := drain(t, q, fd, n+1)
	for i := range n {
		d := got[uint64(i)]
		want := fmt.Sprintf("%d\n|e%d\n|%d", i, i, i%4)
		if d == nil || fmt.Sprintf("%s|%s|%d", d.out, d.errb, d.exit.ExitCode) != want || d.exits != 1 || d.late != 0 || d.exit.Status != 0 {
			t.Errorf("exec %d: %+v, want %q", i, d, want)
		}
	}
	d := got[n]
	if d == nil || len(d.out) != big || d.exits != 1 || d.late != 0 {
		t.Fatalf("big exec: %+v", d)
	}
	if d.maxBatch > bridge.QueueLimit+256<<10 {
		t.Errorf("one poll took %d bytes of one exec: more than the limit (%d) and a chunk", d.maxBatch, bridge.QueueLimit)
	}
	for _, h := range execs {
		bridge.Release(h)
	}

	// A producer waiting for room when the queue closes: its exec ends and
	// the runtime closes without waiting for a poll that never comes.
	if _, err := bridge.ExecQueued(box, fmt.Sprintf(`{"args":["head","-c","%d","/dev/zero"]}`, big), q, 0, false, false, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := bridge.QueueClose(q); err != nil {
		t.Fatal(err)
	}
	closed = true
	if err := bridge.QueueClose(q); statusOf(err) != errdefs.InvalidArgument {
		t.Errorf("close twice: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- bridge.RuntimeClose(rt) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("runtime close: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("runtime close hangs behind a producer of a closed queue")
	}
}
