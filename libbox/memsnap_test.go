package libbox_test

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libbox/libbox/internal/testutil"
	"github.com/libbox/libbox/libbox"
)

// TestMemorySnapshotVM: a memory snapshot of a running VM box with a
// background process and a tmpfs file; a clone of it resumes the machine
// (the process runs on, the file is there, the disk is the snapshot's)
// with its own hostname and the current clock; removing the snapshot is
// refused while the clone sits on it; the source box restored to it
// resumes it too, keeping its own hostname. One source boot, two resumes.
func TestMemorySnapshotVM(t *testing.T) {
	testutil.RequireQEMU(t)
	home := t.TempDir()
	removeAllOnCleanup(t, home)
	rt := openRT(t, home)
	ctx := ctxT(t, 15*time.Minute)
	a := startIn(t, ctx, rt, libbox.BoxOptions{Isolation: libbox.IsolationVM, Name: "msrc"})
	if _, err := a.Snapshot(ctx, "bad name", libbox.SnapshotOptions{Memory: true}); !errors.Is(err, libbox.ErrInvalidArgument) {
		t.Fatalf("memory snapshot named 'bad name': %v, want InvalidArgument", err)
	}
	r, err := a.Run(ctx, libbox.Command{KeepBackground: true, Args: []string{"sh", "-c",
		"sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > /tmp/sleep.pid; echo kept > /tmp/note; mkdir -p /data && echo disk > /data/f"}})
	if err != nil || r.ExitCode != 0 {
		t.Fatalf("starting a background process: %v, %+v", err, r)
	}
	pid := strings.TrimSpace(sh(t, a, "cat /tmp/sleep.pid"))
	if _, err := strconv.Atoi(pid); err != nil {
		t.Fatalf("pid file holds %q", pid)
	}
	alive := "kill -0 " + pid + " && echo alive; cat /proc/" + pid + "/cmdline | tr '\\0' ' '; echo; cat /tmp/note /data/f; test -e /tmp/after && echo after; cat /proc/sys/kernel/hostname; date +%s"
	// The snapshot's clock is that of the source when it was taken.
	s, err := a.Snapshot(ctx, "mem1", libbox.SnapshotOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Memory || s.Name != "mem1" || s.Size <= 0 {
		t.Fatalf("memory snapshot info %+v", s)
	}
	t.Logf("memory snapshot: %d bytes on disk", s.Size)
	// The source goes on, and writes what the snapshot must not hold.
	sh(t, a, "kill -0 "+pid+" && echo after > /tmp/after && echo after > /data/after")

	check := func(b *libbox.Box, host string) {
		t.Helper()
		if got := b.Info().Backend["resumed"]; got == "" || got == nil {
			t.Fatalf("box %s booted instead of resuming the memory snapshot (backend info %v)", b.ID(), b.Info().Backend)
		}
		out := strings.Split(strings.TrimSpace(sh(t, b, alive)), "\n")
		want := []string{"alive", "sleep 1000 ", "kept", "disk", host}
		if len(out) != 6 || !slices.Equal(out[:5], want) {
			t.Fatalf("box %s after resuming: %q, want %q and the time", b.ID(), out, want)
		}
		secs, _ := strconv.ParseInt(out[5], 10, 64)
		if d := time.Since(time.Unix(secs, 0)); d < -time.Minute || d > time.Minute {
			t.Errorf("box %s clock is %s off after resuming", b.ID(), d)
		}
		if has(t, b, "/data/after") {
			t.Errorf("box %s has a file written after the snapshot", b.ID())
		}
		sh(t, b, "echo works > /tmp/new && cat /tmp/new")
	}

	// Let the snapshot's clock fall behind: the resumed box must not keep it.
	time.Sleep(2 * time.Second)
	c := startIn(t, ctx, rt, libbox.BoxOptions{From: "mem1", Name: "mclone"})
	if c.ID() == a.ID() {
		t.Fatal("the clone has the source's id")
	}
	check(c, "mclone")
	if err := rt.RemoveSnapshot(ctx, "mem1", false); !errors.Is(err, libbox.ErrFailedPrecondition) {
		t.Fatalf("removing a memory snapshot in use: %v, want FailedPrecondition", err)
	}
	// A second start of the clone boots from its disk: the pid is gone.
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Snapshot(ctx, "mem-stopped", libbox.SnapshotOptions{Memory: true}); !errors.Is(err, libbox.ErrFailedPrecondition) {
		t.Fatalf("memory snapshot of a stopped box: %v, want FailedPrecondition", err)
	}
	if err := rt.Remove(ctx, c.ID(), true); err != nil {
		t.Fatal(err)
	}

	// Restore of the same box: it resumes the snapshot with its own hostname.
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Restore(ctx, "mem1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	check(a, "msrc")
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := a.Info().Backend["resumed"]; got != "" {
		t.Errorf("a second start resumed %v again instead of booting from the disk", got)
	}
	if got := sh(t, a, "cat /data/f; test -e /tmp/note || echo no-tmp"); got != "disk\nno-tmp\n" {
		t.Errorf("after a boot from the resumed disk: %q", got)
	}
	if err := rt.Remove(ctx, a.ID(), true); err != nil {
		t.Fatal(err)
	}
	if err := rt.RemoveSnapshot(ctx, "mem1", false); err != nil {
		t.Fatal(err)
	}
}
