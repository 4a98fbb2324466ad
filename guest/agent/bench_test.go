package agent

import (
	"context"
	"testing"
	"time"

	"github.com/libbox/libbox/guest/agentpb"
)

// BenchmarkExecTrue is one sequential exec of /bin/true through the agent
// over a unix socket (for profiling; the reported numbers come from
// ./build.sh bench).
func BenchmarkExecTrue(b *testing.B) { benchExec(b, "/bin/true") }

// BenchmarkExecTruePATH is BenchmarkExecTrue found through PATH, as
// `true` is in a box.
func BenchmarkExecTruePATH(b *testing.B) { benchExec(b, "true") }

func benchExec(b *testing.B, args ...string) {
	h := newHarness(b, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := run(ctx, h.client, &agentpb.ExecStart{Args: args}, nil)
		if err != nil || r.exit.ExitCode != 0 {
			b.Fatal(err, r)
		}
	}
}
