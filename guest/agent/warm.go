package agent

import (
	"google.golang.org/protobuf/proto"

	"github.com/libbox/libbox/guest/agentpb"
)

// Warm builds ahead of the first request what the protobuf runtime
// otherwise builds on a message type's first use (agent.proto's
// descriptors, each type's field coders), for the messages every box
// start and first exec carry. The agent runs it on a goroutine while it
// boots (mounts, waiting for the host), so that work leaves the path of
// the first Ping and Run whenever a CPU is free; it is work the first
// requests would do anyway, so it costs no CPU of its own.
func Warm() {
	for _, m := range []proto.Message{
		&agentpb.PingRequest{}, &agentpb.PingResponse{},
		&agentpb.ExecStart{}, &agentpb.ExecEvents{}, &agentpb.ExecEvent{},
		&agentpb.Started{}, &agentpb.Output{}, &agentpb.Exit{}, &agentpb.ExecTimes{},
	} {
		_ = proto.Unmarshal(nil, m)
		_ = proto.Size(m)
	}
}
