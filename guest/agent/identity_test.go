package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/errdefs/errgrpc"
	"github.com/libbox/libbox/guest/agentpb"
)

// TestIdentifyRefused: every bad request gets its own error, and an agent
// that is not PID 1 of its own kernel (this test process) changes nothing.
// The identity itself is applied in a real VM (libbox/qemu TestVMTemplate).
func TestIdentifyRefused(t *testing.T) {
	h := newHarness(t, Options{Hostname: "boxhost"})
	ctx := within(t, 30*time.Second)
	seed := []byte(strings.Repeat("s", 32))
	now := time.Now().UnixNano()
	for _, c := range []struct {
		name string
		req  *agentpb.IdentifyRequest
		code errdefs.Code
		msg  string
	}{
		{"short seed", &agentpb.IdentifyRequest{Seed: seed[:31], UnixNanos: now}, errdefs.InvalidArgument, "seed of 31 bytes"},
		{"no clock", &agentpb.IdentifyRequest{Seed: seed}, errdefs.InvalidArgument, "clock 0"},
		{"bad hostname", &agentpb.IdentifyRequest{Seed: seed, UnixNanos: now, Hostname: "a b"}, errdefs.InvalidArgument, `hostname "a b"`},
		{"long hostname", &agentpb.IdentifyRequest{Seed: seed, UnixNanos: now, Hostname: strings.Repeat("h", 65)}, errdefs.InvalidArgument, "longer than 64"},
		{"not a VM", &agentpb.IdentifyRequest{Seed: seed, UnixNanos: now, Hostname: "other", BoxId: "b1"}, errdefs.FailedPrecondition, "only the agent of a VM box"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := h.client.Identify(ctx, c.req)
			err = errgrpc.FromGRPC(err)
			if errdefs.CodeOf(err) != c.code || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("Identify = %v, want %s containing %q", err, c.code, c.msg)
			}
		})
	}
	r, err := run(ctx, h.client, &agentpb.ExecStart{Args: []string{"sh", "-c", `echo $HOSTNAME`}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := expectOut("boxhost\n")(r); err != nil {
		t.Fatalf("a refused identity changed the hostname: %v", err)
	}
	info, err := h.client.Info(ctx, &agentpb.InfoRequest{})
	if err != nil || info.BoxId != "" {
		t.Fatalf("Info box id %q, %v; want none", info.GetBoxId(), err)
	}
}
