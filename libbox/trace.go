package libbox

import (
	"context"
	"time"

	"github.com/libbox/libbox/errdefs/errgrpc"
	"github.com/libbox/libbox/guest/agentpb"
)

// ExecTrace is the timeline of one exec, for measuring where its time goes
// (the bench prints it as stages). Host times are the host's clock; agent
// times are the box's clock (see Box.AgentClockOffset). A zero time is a
// step that did not happen or an agent that does not record it.
type ExecTrace struct {
	Call         time.Time // host: Exec was called
	Started      time.Time // host: the Started event arrived
	ExitReceived time.Time // host: the exit event arrived

	Received    time.Time // agent: read the start message
	Dequeued    time.Time // agent: the spawn thread took the request
	Spawned     time.Time // agent: fork/exec returned
	FirstOutput time.Time // agent: read the first output chunk
	Exited      time.Time // agent: the reaper saw the exit
	ExitSent    time.Time // agent: handed the exit event to the stream
}

// Trace returns the exec's timeline. Valid after Done.
func (p *Process) Trace() ExecTrace {
	<-p.done
	return p.trace
}

func (t *ExecTrace) setAgent(x *agentpb.ExecTimes) {
	if x == nil {
		return
	}
	t.Received, t.Dequeued, t.Spawned = unixNanos(x.Received), unixNanos(x.Dequeued), unixNanos(x.Spawned)
	t.FirstOutput, t.Exited, t.ExitSent = unixNanos(x.FirstOutput), unixNanos(x.Exited), unixNanos(x.ExitSent)
}

func unixNanos(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// AgentBootTimes asks the agent when its boot stages ended, on the box's
// clock: "main", "boot" (mounts done), "runtime" (spawner ready),
// "serving" (gRPC server up). For measuring; empty from older agents.
func (b *Box) AgentBootTimes(ctx context.Context) (map[string]time.Time, error) {
	client, err := b.agentClient()
	if err != nil {
		return nil, err
	}
	info, err := client.Info(ctx, &agentpb.InfoRequest{})
	if err != nil {
		return nil, errgrpc.FromGRPC(err)
	}
	out := make(map[string]time.Time, len(info.GetBootUnixNanos()))
	for k, ns := range info.GetBootUnixNanos() {
		out[k] = unixNanos(ns)
	}
	return out, nil
}

// AgentClockOffset estimates the box's clock minus the host's from the
// fastest of a few pings (error: half that ping's round trip). A sandbox
// shares the host's clock; a VM's may differ.
func (b *Box) AgentClockOffset(ctx context.Context) (offset, uncertainty time.Duration, err error) {
	client, err := b.agentClient()
	if err != nil {
		return 0, 0, err
	}
	best := time.Duration(-1)
	for i := 0; i < 8; i++ {
		t0 := time.Now()
		r, err := client.Ping(ctx, &agentpb.PingRequest{})
		if err != nil {
			return 0, 0, errgrpc.FromGRPC(err)
		}
		rtt := time.Since(t0)
		if best < 0 || rtt < best {
			best = rtt
			mid := t0.Add(rtt / 2)
			offset = unixNanos(r.GetUnixNanos()).Sub(mid)
		}
	}
	return offset, best / 2, nil
}
