package libbox

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/libbox/libbox/errdefs/errgrpc"
	"github.com/libbox/libbox/guest/agentpb"
)

// legacyAgent serves execs as an agent built before the Run call: one
// Exec stream per exec, one event per message. Its "process" prints its
// arguments and exits 0.
type legacyAgent struct {
	agentpb.UnimplementedAgentServer
	execs atomic.Int32
	holds atomic.Int32 // starts that asked for a hold (an old agent ignores it)
}

func (a *legacyAgent) Exec(stream agentpb.Agent_ExecServer) error {
	a.execs.Add(1)
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	start := req.GetStart()
	if start.GetHoldUs() != 0 {
		a.holds.Add(1)
	}
	for _, ev := range []*agentpb.ExecEvent{
		{Event: &agentpb.ExecEvent_Started{Started: &agentpb.Started{Pid: 42, ExecId: uint64(a.execs.Load())}}},
		{Event: &agentpb.ExecEvent_Output{Output: &agentpb.Output{Data: []byte(strings.Join(start.GetArgs(), " ") + "\n")}}},
		{Event: &agentpb.ExecEvent_Exit{Exit: &agentpb.Exit{Status: agentpb.Exit_EXITED}}},
	} {
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	return nil
}

// A new host keeps working with an old agent (a VM box resumed from a
// memory snapshot keeps the agent it had): the first exec tries Run, gets
// UNIMPLEMENTED before anything ran, and goes through Exec; later execs on
// that connection go to Exec at once.
func TestExecOnAgentWithoutRun(t *testing.T) {
	desc := agentpb.Agent_ServiceDesc
	desc.Streams = nil
	for _, s := range agentpb.Agent_ServiceDesc.Streams {
		if s.StreamName != "Run" {
			desc.Streams = append(desc.Streams, s)
		}
	}
	var unknown atomic.Int32
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
		unknown.Add(1)
		return status.Error(codes.Unimplemented, "unknown method")
	}))
	old := &legacyAgent{}
	srv.RegisterService(&desc, old)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Stop()
	conn, err := grpc.NewClient("unix://"+sock, append(errgrpc.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	b := &Box{cfg: boxConfig{ID: "old-agent"}, procs: map[*Process]struct{}{}, client: agentpb.NewAgentClient(conn)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, args := range [][]string{{"echo", "one"}, {"echo", "two"}} {
		r, err := b.Run(ctx, Command{Args: args})
		if err != nil || r.ExitCode != 0 || string(r.Stdout) != strings.Join(args, " ")+"\n" {
			t.Fatalf("exec %d on an old agent: %+v %v", i, r, err)
		}
	}
	if n := unknown.Load(); n != 1 {
		t.Errorf("Run was tried %d times on an agent without it; want once", n)
	}
	if n, h := old.execs.Load(), old.holds.Load(); n != 2 || h != 0 {
		t.Errorf("old agent: %d Exec streams (want 2), %d with a hold (want 0)", n, h)
	}
}
