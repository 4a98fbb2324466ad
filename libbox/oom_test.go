package libbox_test

import (
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/libbox/libbox/libbox"
)

// TestExecOOMKilled: in a sandbox box with a small memory limit, an exec
// that allocates past it ends with SIGKILL and OOMKilled, and an exec
// running beside it ends normally, not OOMKilled.
func TestExecOOMKilled(t *testing.T) {
	rt := openRT(t, "")
	b := startBox(t, rt, libbox.BoxOptions{MemoryMiB: 64, AutoRemove: true})
	if _, ok := b.Info().Backend["oom_kills"]; !ok {
		t.Skipf("the box has no memory cgroup to count OOM kills (limits: %v): run as root, or on a host that delegates cgroup v2", b.Info().Backend["limits"])
	}
	ctx := ctxT(t, 2*time.Minute)
	// The normal exec runs until its stdin closes, after the hog's end.
	stdin := &blockingReader{release: make(chan struct{})}
	normal, err := b.Exec(ctx, libbox.Command{Args: []string{"cat"}, Stdin: stdin})
	if err != nil {
		t.Fatal(err)
	}
	// awk doubles a string until the memory limit stops it.
	hog, err := b.Exec(ctx, libbox.Command{Args: []string{"awk", `BEGIN { s = "x"; while (1) s = s s }`}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := hog.Wait(ctx)
	close(stdin.release)
	if err != nil {
		t.Fatal(err)
	}
	if st.Signal != int(syscall.SIGKILL) || !st.OOMKilled {
		t.Errorf("allocating past the 64 MiB limit: %+v, want signal 9 and OOMKilled", st)
	}
	nst, err := normal.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if nst.ExitCode != 0 || nst.Signal != 0 || nst.OOMKilled {
		t.Errorf("the exec beside it: %+v, want exit 0, not OOMKilled", nst)
	}
	// A later SIGKILL that is not the OOM killer's is not OOMKilled.
	r, err := b.Run(ctx, libbox.Command{Args: []string{"sh", "-c", "kill -9 $$"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Signal != int(syscall.SIGKILL) || r.OOMKilled {
		t.Errorf("kill -9: %+v, want signal 9, not OOMKilled", r.ExitStatus)
	}
	if n, _ := b.Info().Backend["oom_kills"].(int); n < 1 {
		t.Errorf("box info oom_kills %d, want at least 1", n)
	}
}

// blockingReader is a stdin that reads nothing until released, then EOF.
type blockingReader struct{ release chan struct{} }

func (r *blockingReader) Read([]byte) (int, error) {
	<-r.release
	return 0, io.EOF
}
