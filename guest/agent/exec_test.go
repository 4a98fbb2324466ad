package agent

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/errdefs/errgrpc"
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

// startExec opens an Exec stream and returns it with its Started event.
func startExec(t *testing.T, ctx context.Context, c agentpb.AgentClient, start *agentpb.ExecStart) (agentpb.Agent_ExecClient, *agentpb.Started) {
	t.Helper()
	st, err := c.Exec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Start{Start: start}}); err != nil {
		t.Fatal(err)
	}
	ev, err := st.Recv()
	if err != nil || ev.GetStarted() == nil {
		t.Fatalf("want started, got %v %v", ev, err)
	}
	return st, ev.GetStarted()
}

// waitExit reads the stream to its exit event.
func waitExit(t *testing.T, st agentpb.Agent_ExecClient) (*agentpb.Exit, []byte) {
	t.Helper()
	var out []byte
	for {
		ev, err := st.Recv()
		if err != nil {
			t.Fatalf("stream ended without an exit: %v", err)
		}
		if o := ev.GetOutput(); o != nil {
			out = append(out, o.Data...)
		}
		if ex := ev.GetExit(); ex != nil {
			return ex, out
		}
	}
}

// Control calls never wait behind stdin the process does not read.
func TestControlWhileStdinFull(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 30*time.Second)
	for _, ctl := range []string{"signal", "close-stdin", "resize"} {
		t.Run(ctl, func(t *testing.T) {
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			st, started := startExec(t, sctx, h.client, &agentpb.ExecStart{Args: []string{"sleep", "60"}, Stdin: true})
			fed := make(chan int, 1)
			go func() { // blocks on flow control: sleep never reads
				chunk := make([]byte, 1<<20)
				n := 0
				for ; n < 64; n++ {
					if st.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Stdin{Stdin: chunk}}) != nil {
						break
					}
				}
				fed <- n
			}()
			time.Sleep(300 * time.Millisecond) // let stdin fill
			id := started.GetExecId()
			switch ctl {
			case "close-stdin":
				if _, err := h.client.CloseStdin(ctx, &agentpb.CloseStdinRequest{ExecId: id, After: 64 << 20}); err != nil {
					t.Fatal(err)
				}
			case "resize":
				_, err := h.client.Resize(ctx, &agentpb.ResizeRequest{ExecId: id, Size: &agentpb.TtySize{Rows: 10, Cols: 10}})
				if !errdefs.IsFailedPrecondition(errgrpc.FromGRPC(err)) {
					t.Fatalf("resize without a terminal: want FailedPrecondition, got %v", err)
				}
			}
			if _, err := h.client.Signal(ctx, &agentpb.SignalRequest{ExecId: id, Signal: int32(syscall.SIGTERM)}); err != nil {
				t.Fatal(err)
			}
			ex, _ := waitExit(t, st)
			if ex.Status != agentpb.Exit_SIGNALED || ex.Signal != int32(syscall.SIGTERM) {
				t.Fatalf("want death by SIGTERM, got %v", ex)
			}
			cancel() // wakes the blocked feeder
			if n := <-fed; n >= 64 {
				t.Errorf("all of stdin went through a process that never reads (%d MiB)", n)
			}
			_, err := h.client.Signal(ctx, &agentpb.SignalRequest{ExecId: id, Signal: int32(syscall.SIGTERM)})
			if !errdefs.IsNotFound(errgrpc.FromGRPC(err)) {
				t.Errorf("signal after the exit: want NotFound, got %v", err)
			}
		})
	}
}

// CloseStdin counts bytes, so it may overtake the data it follows.
func TestCloseStdinAfterBytes(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 30*time.Second)
	st, started := startExec(t, ctx, h.client, &agentpb.ExecStart{Args: []string{"cat"}, Stdin: true})
	in := bytes.Repeat([]byte("0123456789abcdef"), 40000) // 640 kB
	if _, err := h.client.CloseStdin(ctx, &agentpb.CloseStdinRequest{ExecId: started.GetExecId(), After: uint64(len(in))}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for off := 0; off < len(in); off += 7000 {
			_ = st.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Stdin{Stdin: in[off:min(off+7000, len(in))]}})
		}
		// Past the close: dropped.
		_ = st.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Stdin{Stdin: []byte("late")}})
	}()
	ex, out := waitExit(t, st)
	if ex.Status != agentpb.Exit_EXITED || ex.ExitCode != 0 {
		t.Fatalf("cat: %v", ex)
	}
	if !bytes.Equal(out, in) {
		t.Fatalf("cat echoed %d bytes, want the %d sent before the close", len(out), len(in))
	}
}

func TestResizeTTY(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 30*time.Second)
	st, started := startExec(t, ctx, h.client, &agentpb.ExecStart{Args: []string{"sh", "-c", "read x; stty size"}, Tty: true, Stdin: true})
	if _, err := h.client.Resize(ctx, &agentpb.ResizeRequest{ExecId: started.GetExecId(), Size: &agentpb.TtySize{Rows: 33, Cols: 77}}); err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Stdin{Stdin: []byte("go\n")}}); err != nil {
		t.Fatal(err)
	}
	ex, out := waitExit(t, st)
	if ex.ExitCode != 0 || !bytes.Contains(out, []byte("33 77")) {
		t.Fatalf("stty size after resize: %q (%v)", out, ex)
	}
	for _, bad := range []*agentpb.ResizeRequest{{ExecId: 1 << 40, Size: &agentpb.TtySize{Rows: 1, Cols: 1}}, {ExecId: started.GetExecId()}} {
		if _, err := h.client.Resize(ctx, bad); err == nil {
			t.Errorf("resize %v: want an error", bad)
		}
	}
}
