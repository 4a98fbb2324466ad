package agent

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/errdefs/errgrpc"
	"github.com/libbox/libbox/guest/agentpb"
)

// runMessages calls Run and returns its messages, each checked against
// Exec's rules: Started first (unless the spawn failed), one Exit, last.
func runMessages(t *testing.T, ctx context.Context, c agentpb.AgentClient, start *agentpb.ExecStart) []*agentpb.ExecEvents {
	t.Helper()
	st, err := c.Run(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*agentpb.ExecEvents
	for {
		m, err := st.Recv()
		if err != nil {
			checkRunEvents(t, msgs)
			return msgs
		}
		if len(m.GetEvents()) == 0 {
			t.Fatal("an ExecEvents message without events")
		}
		msgs = append(msgs, m)
	}
}

func checkRunEvents(t *testing.T, msgs []*agentpb.ExecEvents) {
	t.Helper()
	var all []*agentpb.ExecEvent
	for _, m := range msgs {
		all = append(all, m.GetEvents()...)
	}
	if len(all) == 0 || all[len(all)-1].GetExit() == nil {
		t.Fatalf("Run ended without an exit: %v", msgs)
	}
	for i, ev := range all {
		if ev.GetStarted() != nil && i != 0 {
			t.Fatalf("Started is event %d, not the first: %v", i, msgs)
		}
		if ev.GetExit() != nil && i != len(all)-1 {
			t.Fatalf("Exit is event %d of %d: %v", i, len(all), msgs)
		}
	}
	if all[0].GetStarted() == nil && all[0].GetExit().GetStatus() != agentpb.Exit_SPAWN_FAILED {
		t.Fatalf("first event %v: want Started (or a spawn failure)", all[0])
	}
}

// output concatenates a stream's output in msgs.
func output(msgs []*agentpb.ExecEvents, s agentpb.Output_Stream) []byte {
	var b []byte
	for _, m := range msgs {
		for _, ev := range m.GetEvents() {
			if o := ev.GetOutput(); o != nil && o.Stream == s {
				b = append(b, o.Data...)
			}
		}
	}
	return b
}

func lastExit(msgs []*agentpb.ExecEvents) *agentpb.Exit {
	evs := msgs[len(msgs)-1].GetEvents()
	return evs[len(evs)-1].GetExit()
}

// A short process held until its exit arrives whole: Started, its output
// on both streams and its Exit, in one message.
func TestRunShortProcessIsOneMessage(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 30*time.Second)
	start := sh("echo out; echo err >&2; echo more; exit 7")
	start.HoldUs = time.Hour.Microseconds()
	msgs := runMessages(t, ctx, h.client, start)
	if len(msgs) != 1 {
		t.Fatalf("a process that ends within its hold took %d messages: %v", len(msgs), msgs)
	}
	if got := string(output(msgs, agentpb.Output_STDOUT)); got != "out\nmore\n" {
		t.Errorf("stdout %q", got)
	}
	if got := string(output(msgs, agentpb.Output_STDERR)); got != "err\n" {
		t.Errorf("stderr %q", got)
	}
	if ex := lastExit(msgs); ex.Status != agentpb.Exit_EXITED || ex.ExitCode != 7 {
		t.Errorf("exit %v", ex)
	}
	if msgs[0].Events[0].GetStarted().GetPid() <= 0 {
		t.Errorf("started %v", msgs[0].Events[0])
	}
}

// waitingScript prints what it is given, then waits for a file the test
// creates: the test decides when the process may end.
func waitingScript(t *testing.T, before string) (*agentpb.ExecStart, func()) {
	gate := filepath.Join(t.TempDir(), "go")
	start := sh(before + "; while [ ! -e " + gate + " ]; do sleep 0.01; done; echo after")
	return start, func() {
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// runFirst calls Run and reads its first message.
func runFirst(t *testing.T, ctx context.Context, c agentpb.AgentClient, start *agentpb.ExecStart) (agentpb.Agent_RunClient, *agentpb.ExecEvents) {
	t.Helper()
	st, err := c.Run(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return st, first
}

// readUntilExit reads Run messages after the first and returns them all.
func readUntilExit(t *testing.T, st agentpb.Agent_RunClient, first *agentpb.ExecEvents) []*agentpb.ExecEvents {
	t.Helper()
	msgs := []*agentpb.ExecEvents{first}
	for {
		m, err := st.Recv()
		if err != nil {
			checkRunEvents(t, msgs)
			return msgs
		}
		msgs = append(msgs, m)
	}
}

// A process that outlives its hold still streams: its start and first
// output arrive while it runs, the rest after.
func TestRunLongProcessStreams(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 30*time.Second)
	start, release := waitingScript(t, "echo before")
	start.HoldUs = (20 * time.Millisecond).Microseconds()
	st, first := runFirst(t, ctx, h.client, start)
	// The process cannot have ended: the hold ended by its time.
	evs := first.GetEvents()
	if evs[0].GetStarted() == nil || evs[len(evs)-1].GetExit() != nil {
		t.Fatalf("first message %v: want Started, without the exit", first)
	}
	release()
	msgs := readUntilExit(t, st, first)
	if got := string(output(msgs, agentpb.Output_STDOUT)); got != "before\nafter\n" {
		t.Errorf("stdout %q", got)
	}
	if ex := lastExit(msgs); ex.Status != agentpb.Exit_EXITED || ex.ExitCode != 0 {
		t.Errorf("exit %v", ex)
	}
}

// Held output goes out once it fills a chunk, however long the hold.
func TestRunHeldOutputFlushesAtAChunk(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 30*time.Second)
	start, release := waitingScript(t, "head -c 100000 /dev/zero")
	start.HoldUs = time.Hour.Microseconds()
	st, first := runFirst(t, ctx, h.client, start)
	if n := len(output([]*agentpb.ExecEvents{first}, agentpb.Output_STDOUT)); n < chunkSize || first.Events[0].GetStarted() == nil {
		t.Fatalf("first message: Started %v and %d bytes; want Started and at least a chunk", first.Events[0].GetStarted(), n)
	}
	release()
	msgs := readUntilExit(t, st, first)
	if got := output(msgs, agentpb.Output_STDOUT); !bytes.Equal(got, append(make([]byte, 100000), "after\n"...)) {
		t.Errorf("stdout: %d bytes", len(got))
	}
	for _, m := range msgs {
		for _, ev := range m.Events {
			if n := len(ev.GetOutput().GetData()); n > chunkSize {
				t.Errorf("an output event of %d bytes (a chunk is %d)", n, chunkSize)
			}
		}
	}
}

// Without a hold every event leaves when it happens; the output and the
// exit still arrive whole and in order.
func TestRunWithoutHold(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 30*time.Second)
	msgs := runMessages(t, ctx, h.client, sh("printf 'a\\nb\\n'; echo c >&2"))
	if got := string(output(msgs, agentpb.Output_STDOUT)); got != "a\nb\n" {
		t.Errorf("stdout %q", got)
	}
	if got := string(output(msgs, agentpb.Output_STDERR)); got != "c\n" {
		t.Errorf("stderr %q", got)
	}
	if len(msgs[0].Events) != 1 || msgs[0].Events[0].GetStarted() == nil {
		t.Errorf("first message %v: want Started alone", msgs[0])
	}
}

func TestRunRefusesStdinAndReportsSpawnFailures(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 30*time.Second)
	st, err := h.client.Run(ctx, &agentpb.ExecStart{Args: []string{"cat"}, Stdin: true})
	if err == nil {
		_, err = st.Recv()
	}
	if !errdefs.IsInvalidArgument(errgrpc.FromGRPC(err)) {
		t.Errorf("Run with stdin: want InvalidArgument, got %v", err)
	}
	start := &agentpb.ExecStart{Args: []string{"/no/such/program"}, HoldUs: time.Hour.Microseconds()}
	msgs := runMessages(t, ctx, h.client, start)
	if len(msgs) != 1 || len(msgs[0].Events) != 1 {
		t.Fatalf("spawn failure: %v", msgs)
	}
	if ex := lastExit(msgs); ex.Status != agentpb.Exit_SPAWN_FAILED || ex.SpawnReason != agentpb.Exit_NOT_FOUND {
		t.Errorf("spawn failure: %v", ex)
	}
}

// The client going away while events are held kills the process group.
func TestRunCancelWhileHeldKillsGroup(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 30*time.Second)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := sh("sleep 100 & sleep 100")
	start.HoldUs = time.Hour.Microseconds()
	if _, err := h.client.Run(rctx, start); err != nil {
		t.Fatal(err)
	}
	var pid int
	for pid == 0 {
		ps, err := h.client.Processes(ctx, &agentpb.ProcessesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps.GetProcesses() {
			pid = int(p.GetPid())
		}
		if ctx.Err() != nil {
			t.Fatal("the process never showed up")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	waitGone(t, -pid)
}

// Many concurrent Runs, held and not, each get their own output and exit.
func TestRunConcurrent(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 120*time.Second)
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := sh("echo " + strconv.Itoa(i) + "; exit " + strconv.Itoa(i%5))
			if i%2 == 0 {
				start.HoldUs = time.Second.Microseconds()
			}
			msgs := runMessages(t, ctx, h.client, start)
			if got := string(output(msgs, agentpb.Output_STDOUT)); got != strconv.Itoa(i)+"\n" {
				t.Errorf("exec %d: stdout %q", i, got)
			}
			if ex := lastExit(msgs); ex.Status != agentpb.Exit_EXITED || int(ex.ExitCode) != i%5 {
				t.Errorf("exec %d: exit %v", i, ex)
			}
		}()
	}
	wg.Wait()
}
