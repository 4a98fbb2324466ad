package libbox_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libbox/libbox/libbox"
)

// dirUsage is the disk space the files under dir take.
func dirUsage(t testing.TB, dir string) int64 {
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a socket or file going away
		}
		if fi, err := d.Info(); err == nil {
			n += fi.Sys().(*syscall.Stat_t).Blocks * 512
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// has reports whether path exists in the box.
func has(t testing.TB, b *libbox.Box, path string) bool {
	t.Helper()
	ok, err := b.Exists(ctxT(t, 30*time.Second), path)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func startIn(t testing.TB, ctx context.Context, rt *libbox.Runtime, o libbox.BoxOptions) *libbox.Box {
	t.Helper()
	b, err := rt.Create(ctx, o)
	if err != nil {
		t.Fatalf("create %+v: %v", o, err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	return b
}

// snapshotScenario: a snapshot taken under 32 concurrent execs, clones
// that diverge from the source, restore, a snapshot of a clone (with a
// deletion: a whiteout in a layer), export, import as an image and a box
// made from it, removal refused while in use, hidden snapshots collected.
func snapshotScenario(t *testing.T, rt *libbox.Runtime, iso string, clones int) {
	ctx := ctxT(t, 15*time.Minute)
	a := startIn(t, ctx, rt, libbox.BoxOptions{Isolation: iso, Name: "src"})
	sh(t, a, "mkdir -p /data && echo one > /data/f && echo gone > /data/g && dd if=/dev/zero of=/data/big bs=64k count=64 2>/dev/null")

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); concurrentExecs(t, a, 32, "snap") }()
	time.Sleep(50 * time.Millisecond)
	s1, err := a.Snapshot(ctx, "s1", libbox.SnapshotOptions{})
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: snapshot of a running box: %d bytes on disk, %d bytes copied", iso, s1.Size, s1.Written)
	if s1.Name != "s1" || s1.Box != a.ID() || s1.Isolation != iso || s1.Size <= 0 {
		t.Fatalf("snapshot info %+v", s1)
	}
	concurrentExecs(t, a, 8, "after") // the box goes on
	if _, err := a.Snapshot(ctx, "s1", libbox.SnapshotOptions{}); !errors.Is(err, libbox.ErrAlreadyExists) {
		t.Fatalf("second snapshot s1: %v, want AlreadyExists", err)
	}
	if _, err := a.Snapshot(ctx, "bad name", libbox.SnapshotOptions{}); !errors.Is(err, libbox.ErrInvalidArgument) {
		t.Fatalf("snapshot named 'bad name': %v, want InvalidArgument", err)
	}
	if iso == libbox.IsolationSandbox { // VM: TestMemorySnapshotVM
		if _, err := a.Snapshot(ctx, "mem", libbox.SnapshotOptions{Memory: true}); !errors.Is(err, libbox.ErrUnsupported) {
			t.Fatalf("memory snapshot of a sandbox box: %v, want Unsupported", err)
		}
	}

	// Clones, started together.
	cs := make([]*libbox.Box, clones)
	var cwg sync.WaitGroup
	for i := range cs {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			cs[i] = startIn(t, ctx, rt, libbox.BoxOptions{From: "s1", Name: fmt.Sprintf("clone%d", i)})
		}()
	}
	cwg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	c := cs[0]
	if got := sh(t, c, "cat /data/f"); got != "one\n" {
		t.Fatalf("clone reads %q, want the snapshot's file", got)
	}
	if got := c.Info().Isolation; got != iso {
		t.Fatalf("clone isolation %q, want %q", got, iso)
	}
	// Diverge.
	sh(t, a, "echo a > /data/a-only")
	sh(t, c, "echo c > /data/c-only && rm /data/g")
	if has(t, c, "/data/a-only") || has(t, a, "/data/c-only") || !has(t, a, "/data/g") {
		t.Fatal("writes of a box show in the other")
	}
	for _, other := range cs[1:] {
		if has(t, other, "/data/c-only") || !has(t, other, "/data/g") {
			t.Fatal("a clone sees another clone's writes")
		}
	}
	// Removal refused while in use.
	err = rt.RemoveSnapshot(ctx, "s1", false)
	if !errors.Is(err, libbox.ErrFailedPrecondition) || !strings.Contains(err.Error(), "clone0") {
		t.Fatalf("remove s1 in use: %v, want FailedPrecondition naming clone0", err)
	}
	if err := rt.RemoveSnapshot(ctx, "nope", false); !errors.Is(err, libbox.ErrNotFound) {
		t.Fatalf("remove unknown snapshot: %v", err)
	}
	list, err := rt.Snapshots(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "s1" || len(list[0].UsedBy) < clones || !slices.Contains(list[0].UsedBy, "box clone0") {
		t.Fatalf("snapshots: %+v, %v (want s1 used by %d clones)", list, err, clones)
	}

	// Restore: refused while running, then the box is s1 again.
	if err := a.Restore(ctx, "s1"); !errors.Is(err, libbox.ErrFailedPrecondition) {
		t.Fatalf("restore of a running box: %v", err)
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Restore(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if has(t, a, "/data/a-only") || sh(t, a, "cat /data/f") != "one\n" {
		t.Fatal("restore did not roll the box back to s1")
	}

	// A snapshot of a clone, with a deletion in its layer.
	s2, err := c.Snapshot(ctx, "s2", libbox.SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s2.Parent != "s1" {
		t.Fatalf("s2's parent %q, want s1", s2.Parent)
	}
	// Export the clone and import it as an image.
	dir := filepath.Join(t.TempDir(), "export")
	if err := c.Export(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if err := c.Export(ctx, dir); !errors.Is(err, libbox.ErrAlreadyExists) {
		t.Fatalf("export into a non-empty dir: %v", err)
	}
	e := startIn(t, ctx, rt, libbox.BoxOptions{Isolation: iso, Image: "oci-layout:" + dir})
	if sh(t, e, "cat /data/c-only /data/f") != "c\none\n" || has(t, e, "/data/g") {
		t.Fatal("the exported image is not the clone's file system")
	}
	if err := e.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rt.Remove(ctx, e.ID(), true); err != nil {
		t.Fatal(err)
	}
	for _, b := range append([]*libbox.Box{a}, cs...) {
		if err := rt.Remove(ctx, b.ID(), true); err != nil {
			t.Fatal(err)
		}
	}
	// s1 is still the parent of s2.
	if err := rt.RemoveSnapshot(ctx, "s1", false); !errors.Is(err, libbox.ErrFailedPrecondition) {
		t.Fatalf("remove s1 under s2: %v", err)
	}
	if err := rt.RemoveSnapshot(ctx, "s1", true); err != nil {
		t.Fatal(err)
	}
	d := startIn(t, ctx, rt, libbox.BoxOptions{From: "s2"})
	if has(t, d, "/data/g") || sh(t, d, "cat /data/c-only /data/f") != "c\none\n" {
		t.Fatal("a clone of s2 (on hidden s1) has the wrong files")
	}
	// A clone of a box: a hidden snapshot, gone with its last user.
	d2 := startIn(t, ctx, rt, libbox.BoxOptions{From: d.ID()})
	if !has(t, d2, "/data/c-only") {
		t.Fatal("a clone of a box misses its files")
	}
	for _, b := range []*libbox.Box{d2, d} {
		if err := rt.Remove(ctx, b.ID(), true); err != nil {
			t.Fatal(err)
		}
	}
	if err := rt.RemoveSnapshot(ctx, "s2", false); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(rt.Home(), "snapshots")); len(ents) != 0 {
		t.Fatalf("snapshot layers left: %d", len(ents))
	}
}

func TestSnapshotSandbox(t *testing.T) {
	requireSandbox(t)
	home := t.TempDir()
	removeAllOnCleanup(t, home)
	snapshotScenario(t, openRT(t, home), libbox.IsolationSandbox, 2)
}

func TestSnapshotVM(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil && runtime.GOARCH == "amd64" {
		t.Skip("qemu-system-x86_64 not installed: apt-get install qemu-system-x86 qemu-utils (./build.sh deps does)")
	}
	home := t.TempDir()
	removeAllOnCleanup(t, home)
	rt := openRT(t, home)
	snapshotScenario(t, rt, libbox.IsolationVM, 3)
}

// TestSnapshotCloneMany: 50 clones of one snapshot started, checked and
// removed; what each clone wrote to disk is measured (it must be far less
// than the snapshot's layer: nothing is copied).
func TestSnapshotCloneMany(t *testing.T) {
	requireSandbox(t)
	home := t.TempDir()
	removeAllOnCleanup(t, home)
	rt := openRT(t, home)
	ctx := ctxT(t, 10*time.Minute)
	src := startBox(t, rt, libbox.BoxOptions{})
	sh(t, src, "dd if=/dev/urandom of=/layer bs=64k count=64 2>/dev/null && md5sum /layer > /layer.md5")
	if err := src.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	snap, err := src.Snapshot(ctx, "base", libbox.SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if snap.Written != 0 {
		t.Fatalf("snapshot of a stopped box copied %d bytes, want 0 (a move)", snap.Written)
	}
	const n = 50
	boxes := make([]*libbox.Box, n)
	usage := make([]int64, n)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range boxes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			b := startIn(t, ctx, rt, libbox.BoxOptions{From: "base"})
			boxes[i] = b
			r, err := b.Run(ctx, libbox.Command{Args: []string{"md5sum", "-c", "/layer.md5"}})
			if err != nil || r.ExitCode != 0 {
				t.Errorf("clone %d: md5sum -c: %v %+v", i, err, r)
			}
			usage[i] = dirUsage(t, b.Info().Dir)
		}()
	}
	wg.Wait()
	var total int64
	for _, u := range usage {
		total += u
	}
	t.Logf("%d clones: %d bytes on disk each on average (box dir after the first exec); the snapshot layer is %d bytes", n, total/n, snap.Size)
	if total/n >= snap.Size/4 {
		t.Fatalf("a clone takes %d bytes on average, the layer %d: clones copy it", total/n, snap.Size)
	}
	for _, b := range boxes {
		if b != nil {
			if err := rt.Remove(ctx, b.ID(), true); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := rt.RemoveSnapshot(ctx, "base", false); !errors.Is(err, libbox.ErrFailedPrecondition) {
		t.Fatalf("remove base while the source sits on it: %v", err)
	}
	if err := rt.Remove(ctx, src.ID(), true); err != nil {
		t.Fatal(err)
	}
	if err := rt.RemoveSnapshot(ctx, "base", false); err != nil {
		t.Fatal(err)
	}
}
