package agentpb

import "google.golang.org/grpc"

// ClientOptions are the dial options every client of an agent uses: the
// host library (libbox.Box) and the bench's plain-process agent, so the
// bench measures the agent as the library drives it.
//
// Fixed flow-control windows, large enough for a box's output bursts,
// also turn off gRPC's bandwidth estimation, which would otherwise send an
// HTTP/2 PING (and make the agent answer it) with the data of every exec.
func ClientOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(1 << 20),
		grpc.WithInitialConnWindowSize(16 << 20),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16 << 20)),
	}
}
