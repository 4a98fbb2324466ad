package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/errdefs/errgrpc"
	"github.com/libbox/libbox/guest/agentpb"
	"golang.org/x/sys/unix"
)

// fsHarness is an agent whose box root is a temp dir.
func fsHarness(t *testing.T) (*harness, string) {
	root := t.TempDir()
	h := newHarness(t, Options{Root: root})
	return h, root
}

func (h *harness) write(t *testing.T, hdr *agentpb.WriteFileHeader, data []byte) error {
	t.Helper()
	st, err := h.client.WriteFile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Send(&agentpb.WriteFileRequest{Header: hdr, Data: data})
	_, err = st.CloseAndRecv()
	return errgrpc.FromGRPC(err)
}

func (h *harness) read(p string, off, n int64) ([]byte, error) {
	st, err := h.client.ReadFile(context.Background(), &agentpb.ReadFileRequest{Path: p, Offset: off, Length: n})
	if err != nil {
		return nil, errgrpc.FromGRPC(err)
	}
	var buf bytes.Buffer
	for {
		c, err := st.Recv()
		if err == io.EOF {
			return buf.Bytes(), nil
		}
		if err != nil {
			return nil, errgrpc.FromGRPC(err)
		}
		buf.Write(c.GetData())
	}
}

func TestFSPathRules(t *testing.T) {
	h, root := fsHarness(t)
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("host"), 0o644)
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc", "secret"), []byte("box"), 0o644)
	os.MkdirAll(filepath.Join(root, "tmp"), 0o755)
	// Absolute and climbing symlinks resolve inside the box root.
	os.Symlink("/etc", filepath.Join(root, "tmp", "abs"))
	os.Symlink("../../../../../../etc", filepath.Join(root, "tmp", "climb"))
	os.Symlink(outside, filepath.Join(root, "tmp", "hostdir"))
	for _, p := range []string{"/tmp/abs/secret", "/tmp/climb/secret"} {
		got, err := h.read(p, 0, 0)
		if err != nil || string(got) != "box" {
			t.Fatalf("read %s: %q %v, want the box's file", p, got, err)
		}
	}
	// A symlink to a host path names that path inside the box (missing).
	if _, err := h.read("/tmp/hostdir/secret", 0, 0); !errdefs.IsNotFound(err) {
		t.Fatalf("read through a host-path symlink: %v, want NotFound", err)
	}
	// Writes through symlinks land inside the root.
	if err := h.write(t, &agentpb.WriteFileHeader{Path: "/tmp/climb/new", MakeParents: true}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc", "new")); err != nil || string(b) != "x" {
		t.Fatalf("write through symlink: %q %v", b, err)
	}
	if err := h.write(t, &agentpb.WriteFileHeader{Path: "/tmp/hostdir/evil", MakeParents: true}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(outside, "evil")); err == nil {
		t.Fatal("a write escaped the box root")
	}
	bad := []struct{ path, want string }{
		{"relative", "InvalidArgument"},
		{"", "InvalidArgument"},
		{"/tmp/../etc/secret", "InvalidArgument"},
		{"/tmp/a\x00b", "InvalidArgument"},
	}
	for _, c := range bad {
		if _, err := h.read(c.path, 0, 0); errdefs.CodeOf(err).String() != c.want {
			t.Errorf("read %q: %v, want %s", c.path, err, c.want)
		}
	}
	// A symlink loop.
	os.Symlink("/tmp/loop2", filepath.Join(root, "tmp", "loop1"))
	os.Symlink("/tmp/loop1", filepath.Join(root, "tmp", "loop2"))
	if _, err := h.read("/tmp/loop1", 0, 0); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("symlink loop: %v", err)
	}
}

func TestFSCalls(t *testing.T) {
	h, root := fsHarness(t)
	ctx := context.Background()
	data := bytes.Repeat([]byte{0xff, 0x00, 0xfe, 'x'}, 300000) // not UTF-8, > one chunk
	if err := h.write(t, &agentpb.WriteFileHeader{Path: "/a/b/c.bin", MakeParents: true, Mode: 0o600}, data); err != nil {
		t.Fatal(err)
	}
	got, err := h.read("/a/b/c.bin", 0, 0)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("round trip: %d bytes, %v", len(got), err)
	}
	if got, _ := h.read("/a/b/c.bin", 4, 3); string(got) != "\xff\x00\xfe" {
		t.Fatalf("range read: %q", got)
	}
	if got, _ := h.read("/a/b/c.bin", int64(len(data))+10, 5); len(got) != 0 {
		t.Fatalf("read past the end: %q", got)
	}
	fi, err := os.Stat(filepath.Join(root, "a/b/c.bin"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode: %v %v", fi, err)
	}
	// No temp file left behind.
	ents, _ := os.ReadDir(filepath.Join(root, "a/b"))
	if len(ents) != 1 {
		t.Fatalf("entries after write: %v", ents)
	}
	// Append.
	if err := h.write(t, &agentpb.WriteFileHeader{Path: "/a/log", Append: true}, []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := h.write(t, &agentpb.WriteFileHeader{Path: "/a/log", Append: true}, []byte("2")); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.read("/a/log", 0, 0); string(got) != "12" {
		t.Fatalf("append: %q", got)
	}
	// Several files in one stream.
	st, _ := h.client.WriteFile(ctx)
	for i := range 3 {
		st.Send(&agentpb.WriteFileRequest{Header: &agentpb.WriteFileHeader{Path: fmt.Sprintf("/many/%d", i), MakeParents: true}})
		st.Send(&agentpb.WriteFileRequest{Data: []byte(strings.Repeat("m", i))})
	}
	resp, err := st.CloseAndRecv()
	if err != nil || resp.GetFiles() != 3 || resp.GetBytes() != 3 {
		t.Fatalf("write many: %v %v", resp, err)
	}
	// List with depth, symlinks listed not followed.
	os.Symlink("/a", filepath.Join(root, "many", "link"))
	l, err := h.client.ListDir(ctx, &agentpb.ListDirRequest{Path: "/many", Depth: 1})
	if err != nil || len(l.Entries) != 4 || l.Entries[3].GetType() != agentpb.FileInfo_SYMLINK || l.Entries[3].GetLinkTarget() != "/a" {
		t.Fatalf("list: %v %v", l, err)
	}
	l, err = h.client.ListDir(ctx, &agentpb.ListDirRequest{Path: "/a", Depth: 5})
	var paths []string
	for _, e := range l.GetEntries() {
		paths = append(paths, e.GetPath())
	}
	if err != nil || strings.Join(paths, " ") != "/a/b /a/b/c.bin /a/log" {
		t.Fatalf("list depth 5: %v %v", paths, err)
	}
	if l, _ := h.client.ListDir(ctx, &agentpb.ListDirRequest{Path: "/a", Depth: 1}); len(l.GetEntries()) != 2 {
		t.Fatalf("list depth 1: %v", l)
	}
	sfi, err := h.client.Stat(ctx, &agentpb.StatRequest{Path: "/a/b/c.bin"})
	if err != nil || sfi.GetSize() != int64(len(data)) || sfi.GetType() != agentpb.FileInfo_FILE || sfi.GetName() != "c.bin" || sfi.GetMode() != 0o600 {
		t.Fatalf("stat: %v %v", sfi, err)
	}
	// Mkdir, rename, remove.
	if _, err := h.client.Mkdir(ctx, &agentpb.MkdirRequest{Path: "/d/e", Parents: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.Mkdir(ctx, &agentpb.MkdirRequest{Path: "/d/e", Parents: true}); err != nil {
		t.Fatalf("mkdir -p of an existing dir: %v", err)
	}
	if _, err := h.client.Rename(ctx, &agentpb.RenameRequest{Src: "/a/log", Dst: "/d/e/log"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "d/e/log")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.Remove(ctx, &agentpb.RemoveRequest{Path: "/d", Recursive: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "d")); err == nil {
		t.Fatal("remove -r left the dir")
	}
	// Every error class.
	code := func(err error) string { return errdefs.CodeOf(errgrpc.FromGRPC(err)).String() }
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"read missing", func() error { _, err := h.read("/nope", 0, 0); return err }(), "NotFound"},
		{"read a dir", func() error { _, err := h.read("/a", 0, 0); return err }(), "FailedPrecondition"},
		{"negative offset", func() error { _, err := h.read("/a/log", -1, 0); return err }(), "InvalidArgument"},
		{"write onto a dir", h.write(t, &agentpb.WriteFileHeader{Path: "/a/b"}, nil), "FailedPrecondition"},
		{"write without parent", h.write(t, &agentpb.WriteFileHeader{Path: "/x/y/z"}, nil), "NotFound"},
		{"write unknown user", h.write(t, &agentpb.WriteFileHeader{Path: "/u", User: "nobody-here"}, nil), "InvalidArgument"},
		{"list a file", func() error { _, err := h.client.ListDir(ctx, &agentpb.ListDirRequest{Path: "/a/b/c.bin"}); return err }(), "FailedPrecondition"},
		{"list missing", func() error { _, err := h.client.ListDir(ctx, &agentpb.ListDirRequest{Path: "/none"}); return err }(), "NotFound"},
		{"stat missing", func() error { _, err := h.client.Stat(ctx, &agentpb.StatRequest{Path: "/none"}); return err }(), "NotFound"},
		{"mkdir existing", func() error { _, err := h.client.Mkdir(ctx, &agentpb.MkdirRequest{Path: "/a"}); return err }(), "AlreadyExists"},
		{"mkdir no parent", func() error { _, err := h.client.Mkdir(ctx, &agentpb.MkdirRequest{Path: "/p/q"}); return err }(), "NotFound"},
		{"remove non-empty", func() error { _, err := h.client.Remove(ctx, &agentpb.RemoveRequest{Path: "/a"}); return err }(), "FailedPrecondition"},
		{"remove missing", func() error { _, err := h.client.Remove(ctx, &agentpb.RemoveRequest{Path: "/none"}); return err }(), "NotFound"},
		{"remove root", func() error {
			_, err := h.client.Remove(ctx, &agentpb.RemoveRequest{Path: "/", Recursive: true})
			return err
		}(), "InvalidArgument"},
		{"rename missing", func() error {
			_, err := h.client.Rename(ctx, &agentpb.RenameRequest{Src: "/none", Dst: "/x"})
			return err
		}(), "NotFound"},
		{"rename root", func() error { _, err := h.client.Rename(ctx, &agentpb.RenameRequest{Src: "/", Dst: "/x"}); return err }(), "InvalidArgument"},
		{"kill a foreign pid", func() error { _, err := h.client.Kill(ctx, &agentpb.KillRequest{Pid: int32(os.Getpid())}); return err }(), "NotFound"},
	}
	for _, c := range cases {
		if got := code(c.err); got != c.want {
			t.Errorf("%s: %v (%s), want %s", c.name, c.err, got, c.want)
		}
	}
}

// TestFSAtomicWrite: a reader never sees a half-written file.
func TestFSAtomicWrite(t *testing.T) {
	h, _ := fsHarness(t)
	a, b := bytes.Repeat([]byte("a"), 300<<10), bytes.Repeat([]byte("b"), 300<<10)
	if err := h.write(t, &agentpb.WriteFileHeader{Path: "/f"}, a); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, err := h.read("/f", 0, 0)
			if err == nil && !(bytes.Equal(got, a) || bytes.Equal(got, b)) {
				bad = fmt.Errorf("read a torn file: %d bytes", len(got))
				return
			}
		}
	}()
	for i := range 12 {
		data := a
		if i%2 == 0 {
			data = b
		}
		if err := h.write(t, &agentpb.WriteFileHeader{Path: "/f"}, data); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if bad != nil {
		t.Fatal(bad)
	}
}

func TestFSWatch(t *testing.T) {
	h, root := fsHarness(t)
	os.MkdirAll(filepath.Join(root, "w"), 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := h.client.Watch(ctx, &agentpb.WatchRequest{Path: "/w", Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := st.Recv(); err != nil || ev.GetType() != agentpb.WatchEvent_READY {
		t.Fatalf("first event: %v %v", ev, err)
	}
	const n = 2000 // the 10,000-write burst runs in real boxes (libbox tests)
	go func() {
		os.Mkdir(filepath.Join(root, "w", "sub"), 0o755)
		for i := range n {
			os.WriteFile(filepath.Join(root, "w", "sub", fmt.Sprint(i)), []byte("x"), 0o644)
		}
		h.write(t, &agentpb.WriteFileHeader{Path: "/w/atomic"}, []byte("y"))
		os.Remove(filepath.Join(root, "w", "sub", "0"))
	}()
	seen := map[string]bool{}
	overflow := false
	var atomicType agentpb.WatchEvent_Type = -1
	removed := false
	for !(removed && atomicType >= 0 && (overflow || len(seen) >= n)) {
		ev, err := st.Recv()
		if err != nil {
			t.Fatalf("after %d files: %v", len(seen), err)
		}
		switch {
		case ev.GetType() == agentpb.WatchEvent_OVERFLOW:
			overflow = true
		case ev.GetPath() == "/w/atomic":
			atomicType = ev.GetType()
		case ev.GetType() == agentpb.WatchEvent_CREATE && strings.HasPrefix(ev.GetPath(), "/w/sub/"):
			seen[ev.GetPath()] = true
		case ev.GetType() == agentpb.WatchEvent_REMOVE && ev.GetPath() == "/w/sub/0":
			removed = true
		case strings.Contains(ev.GetPath(), tempPrefix):
			t.Fatalf("a temp file of an atomic write was reported: %v", ev)
		}
	}
	t.Logf("%d of %d creates seen, overflow reported: %v", len(seen), n, overflow)
	if atomicType != agentpb.WatchEvent_WRITE {
		t.Fatalf("atomic write reported as %v, want WRITE", atomicType)
	}
	cancel()
}

func TestProcessesAndKill(t *testing.T) {
	h := newHarness(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := h.client.Exec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Start{Start: &agentpb.ExecStart{Args: []string{"/bin/sleep", "30"}}}})
	ev, err := st.Recv()
	if err != nil || ev.GetStarted() == nil {
		t.Fatalf("exec: %v %v", ev, err)
	}
	pid := ev.GetStarted().GetPid()
	ps, err := h.client.Processes(ctx, &agentpb.ProcessesRequest{})
	if err != nil || len(ps.Processes) != 1 || ps.Processes[0].GetPid() != pid {
		t.Fatalf("processes: %v %v", ps, err)
	}
	stats, err := h.client.Stats(ctx, &agentpb.StatsRequest{})
	if err != nil || stats.GetExecsRunning() != 1 || stats.GetExecsServed() != 1 || stats.GetProcesses() < 1 {
		t.Fatalf("stats: %v %v", stats, err)
	}
	if _, err := h.client.Kill(ctx, &agentpb.KillRequest{Pid: pid}); err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ex := ev.GetExit(); ex != nil {
			if ex.GetSignal() != 9 {
				t.Fatalf("exit after kill: %v", ex)
			}
			break
		}
	}
}

// TestFSFifo: a FIFO in the box neither holds a read or an append (and an
// agent thread) until another process opens its other end, nor breaks a
// listing; the calls say it is not a regular file.
func TestFSFifo(t *testing.T) {
	h, root := fsHarness(t)
	if err := unix.Mkfifo(filepath.Join(root, "pipe"), 0o666); err != nil {
		t.Fatal(err)
	}
	// One call at a time: a read and an append at once would open both
	// ends of the FIFO for each other.
	calls := []func() error{
		func() error { _, err := h.read("/pipe", 0, 0); return err },
		func() error { return h.write(t, &agentpb.WriteFileHeader{Path: "/pipe", Append: true}, []byte("x")) },
		func() error {
			resp, err := h.client.ListDir(context.Background(), &agentpb.ListDirRequest{Path: "/"})
			if err == nil && (len(resp.GetEntries()) != 1 || resp.GetEntries()[0].GetPath() != "/pipe") {
				err = fmt.Errorf("listing: %v", resp.GetEntries())
			}
			return errgrpc.FromGRPC(err)
		},
	}
	var errs []error
	for i, call := range calls {
		done := make(chan error, 1)
		go func() { done <- call() }()
		select {
		case err := <-done:
			errs = append(errs, err)
		case <-time.After(20 * time.Second):
			// Open both ends, so the waiting call (and the agent's
			// shutdown) can end, then fail.
			if f, err := os.OpenFile(filepath.Join(root, "pipe"), os.O_RDWR, 0); err == nil {
				defer f.Close()
			}
			t.Fatalf("call %d on a FIFO is still waiting", i)
		}
	}
	refused := 0
	for _, err := range errs {
		switch {
		case err == nil:
		case errdefs.IsFailedPrecondition(err) && strings.Contains(err.Error(), "not a regular file"):
			refused++
		default:
			t.Errorf("call on a FIFO: %v", err)
		}
	}
	if refused != 2 {
		t.Fatalf("read and append of a FIFO: %v", errs)
	}
}
