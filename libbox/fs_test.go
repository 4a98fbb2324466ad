package libbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libbox/libbox/libbox"
)

// The file-system API, stats and processes, on one box per backend (one
// VM boot for every VM case).

func TestFSSandbox(t *testing.T) {
	requireSandbox(t)
	fsSuite(t, libbox.IsolationSandbox)
}

func TestFSVM(t *testing.T) {
	requireVMHost(t)
	fsSuite(t, libbox.IsolationVM)
}

func fsSuite(t *testing.T, isolation string) {
	home := t.TempDir()
	removeAllOnCleanup(t, home)
	rt := openRT(t, home)
	ctx := ctxT(t, 10*time.Minute)
	b, err := rt.Create(ctx, libbox.BoxOptions{Isolation: isolation, Detach: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Remove(context.Background(), b.ID(), true) })
	if err := b.Start(ctx); err != nil {
		if errors.Is(err, libbox.ErrUnsupported) {
			t.Skipf("no %s on this host: %v", isolation, err)
		}
		t.Fatal(err)
	}
	// 200 MiB each way takes seconds through a sandbox's socket, far
	// longer through a TCG VM's serial port: the VM moves 16 MiB.
	bigMiB := 200
	if isolation == libbox.IsolationVM {
		bigMiB = 16
	}
	t.Run("RoundTrip", func(t *testing.T) { fsRoundTrip(t, ctx, b, bigMiB) })
	t.Run("Atomic", func(t *testing.T) { fsAtomic(t, ctx, b) })
	t.Run("ListStat", func(t *testing.T) { fsListStat(t, ctx, b) })
	t.Run("Errors", func(t *testing.T) { fsErrors(t, ctx, b) })
	t.Run("Escapes", func(t *testing.T) { fsEscapes(t, ctx, b) })
	t.Run("CopyRules", func(t *testing.T) { fsCopyRules(t, ctx, b) })
	t.Run("WatchBurst", func(t *testing.T) { fsWatchBurst(t, ctx, b) })
	t.Run("Concurrent", func(t *testing.T) { fsConcurrent(t, ctx, b) })
	t.Run("Stats", func(t *testing.T) { fsStats(t, ctx, b) })
	t.Run("Processes", func(t *testing.T) { fsProcesses(t, ctx, home, b, isolation == libbox.IsolationSandbox) })
	t.Run("WatchEndsWithBox", func(t *testing.T) { fsWatchEnds(t, ctx, b) })
}

func fsRoundTrip(t *testing.T, ctx context.Context, b *libbox.Box, bigMiB int) {
	cases := map[string][]byte{
		"empty": {}, "one": {'x'}, "mib": bytes.Repeat([]byte{'m'}, 1<<20),
		"binary": {0xff, 0xfe, 0x00, 0xc3, 0x28, '\n'},
	}
	for name, data := range cases {
		p := "/tmp/rt/" + name
		start := time.Now()
		if err := b.WriteFile(ctx, p, data, libbox.WriteOptions{}); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
		mid := time.Now()
		got, err := b.ReadFile(ctx, p)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read %s: %d bytes (want %d), %v", name, len(got), len(data), err)
		}
		if len(data) >= 1<<20 {
			t.Logf("%s: write %v, read %v", name, mid.Sub(start), time.Since(mid))
		}
	}
	// The box sees what the API wrote.
	if got := sh(t, b, "wc -c < /tmp/rt/mib; od -An -tx1 /tmp/rt/binary"); !strings.Contains(got, "1048576") || !strings.Contains(got, "ff fe 00 c3 28 0a") {
		t.Fatalf("in the box: %q", got)
	}
	// A large file, streamed both ways (never whole in memory).
	start := time.Now()
	src := io.LimitReader(&pattern{}, int64(bigMiB)<<20)
	if n, err := b.WriteFileFrom(ctx, "/tmp/rt/big", src, libbox.WriteOptions{}); err != nil || n != int64(bigMiB)<<20 {
		t.Fatalf("write %d MiB: %d %v", bigMiB, n, err)
	}
	mid := time.Now()
	check := &patternCheck{}
	if n, err := b.ReadFileTo(ctx, "/tmp/rt/big", check, 0, -1); err != nil || n != int64(bigMiB)<<20 || check.bad >= 0 {
		t.Fatalf("read %d MiB: %d bytes, first difference at %d, %v", bigMiB, n, check.bad, err)
	}
	t.Logf("%d MiB: write %v, read %v", bigMiB, mid.Sub(start), time.Since(mid))
	if err := b.Remove(ctx, "/tmp/rt/big", false); err != nil {
		t.Fatal(err)
	}
	// Ranges.
	var buf bytes.Buffer
	if n, err := b.ReadFileTo(ctx, "/tmp/rt/binary", &buf, 2, 3); err != nil || n != 3 || buf.String() != "\x00\xc3\x28" {
		t.Fatalf("range: %d %q %v", n, buf.Bytes(), err)
	}
	buf.Reset()
	if n, err := b.ReadFileTo(ctx, "/tmp/rt/binary", &buf, 4, -1); err != nil || n != 2 || buf.String() != "\x28\n" {
		t.Fatalf("range to the end: %d %q %v", n, buf.Bytes(), err)
	}
	if n, err := b.ReadFileTo(ctx, "/tmp/rt/binary", &buf, 100, 5); err != nil || n != 0 {
		t.Fatalf("range past the end: %d %v", n, err)
	}
	// Append, write many, owner.
	for _, s := range []string{"a", "b", "c"} {
		if err := b.AppendFile(ctx, "/tmp/rt/log", []byte(s), libbox.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := b.ReadFile(ctx, "/tmp/rt/log"); string(got) != "abc" {
		t.Fatalf("append: %q", got)
	}
	files := []libbox.FileData{{Path: "/tmp/many/a.py", Data: []byte("print(1)\n")}, {Path: "/tmp/many/sub/b.sh", Data: []byte("echo 2\n"), Mode: 0o755}}
	if err := b.WriteFiles(ctx, files, libbox.WriteOptions{User: "1000:1000"}); err != nil {
		t.Fatal(err)
	}
	if got := sh(t, b, "/tmp/many/sub/b.sh; stat -c '%u:%g %a' /tmp/many/a.py /tmp/many/sub /tmp/many/sub/b.sh"); got != "2\n1000:1000 644\n1000:1000 755\n1000:1000 755\n" {
		t.Fatalf("write many: %q", got)
	}
}

// patternBlock holds the bytes 0..250 repeated (251 is prime, so chunk
// boundaries never line up with the period); pattern and patternCheck
// copy and compare whole slices of it.
var patternBlock = func() []byte {
	b := make([]byte, 251*1024)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}()

// pattern is an endless stream of the bytes 0..250.
type pattern struct{ off int64 }

func (p *pattern) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		n += copy(b[n:], patternBlock[(p.off+int64(n))%251:])
	}
	p.off += int64(n)
	return n, nil
}

// patternCheck compares what is written to it with pattern; bad is the
// offset of the first differing chunk, or -1.
type patternCheck struct{ off, bad int64 }

func (c *patternCheck) Write(b []byte) (int, error) {
	if c.off == 0 && c.bad == 0 {
		c.bad = -1
	}
	for done := 0; done < len(b); {
		want := patternBlock[(c.off+int64(done))%251:]
		n := min(len(want), len(b)-done)
		if c.bad < 0 && !bytes.Equal(b[done:done+n], want[:n]) {
			c.bad = c.off + int64(done)
		}
		done += n
	}
	c.off += int64(len(b))
	return len(b), nil
}

// fsAtomic: a reader in the box never sees a half-written file.
func fsAtomic(t *testing.T, ctx context.Context, b *libbox.Box) {
	small, large := bytes.Repeat([]byte("a"), 100000), bytes.Repeat([]byte("b"), 200000)
	if err := b.WriteFile(ctx, "/tmp/at", small, libbox.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	reader, err := b.Exec(ctx, libbox.Command{Args: []string{"sh", "-c", "i=0; while [ $i -lt 100 ]; do wc -c < /tmp/at; i=$((i+1)); done"}})
	if err != nil {
		t.Fatal(err)
	}
	writes := 0
	for {
		select {
		case <-reader.Done():
		default:
			data := small
			if writes%2 == 0 {
				data = large
			}
			if err := b.WriteFile(ctx, "/tmp/at", data, libbox.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			writes++
			continue
		}
		break
	}
	if _, err := reader.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	out, _ := reader.Output()
	seen := map[string]int{}
	for _, l := range strings.Fields(string(out)) {
		seen[l]++
	}
	for size, n := range seen {
		if size != "100000" && size != "200000" {
			t.Fatalf("a reader saw a %s-byte file %d times (writes: %d)", size, n, writes)
		}
	}
	t.Logf("%d writes, reader saw %v", writes, seen)
}

func fsListStat(t *testing.T, ctx context.Context, b *libbox.Box) {
	sh(t, b, "mkdir -p /tmp/ls/d1/d2 && echo x > /tmp/ls/d1/d2/f && echo yy > /tmp/ls/f && ln -s /tmp/ls/d1 /tmp/ls/link && ln -s /nowhere /tmp/ls/dangling")
	names := func(infos []libbox.FileInfo) string {
		var s []string
		for _, fi := range infos {
			s = append(s, fmt.Sprintf("%s:%s", fi.Path, fi.Type))
		}
		return strings.Join(s, " ")
	}
	l, err := b.ListDir(ctx, "/tmp/ls", 1)
	if want := "/tmp/ls/d1:dir /tmp/ls/dangling:symlink /tmp/ls/f:file /tmp/ls/link:symlink"; err != nil || names(l) != want {
		t.Fatalf("list depth 1: %q %v, want %q", names(l), err, want)
	}
	l, err = b.ListDir(ctx, "/tmp/ls", 3)
	if want := "/tmp/ls/d1:dir /tmp/ls/d1/d2:dir /tmp/ls/d1/d2/f:file /tmp/ls/dangling:symlink /tmp/ls/f:file /tmp/ls/link:symlink"; err != nil || names(l) != want {
		t.Fatalf("list depth 3: %q %v, want %q", names(l), err, want)
	}
	// A symlinked directory lists its target.
	if l, err := b.ListDir(ctx, "/tmp/ls/link", 1); err != nil || names(l) != "/tmp/ls/link/d2:dir" {
		t.Fatalf("list through a symlink: %q %v", names(l), err)
	}
	fi, err := b.Stat(ctx, "/tmp/ls/link")
	if err != nil || fi.Type != libbox.FileTypeSymlink || fi.LinkTarget != "/tmp/ls/d1" || fi.Name != "link" {
		t.Fatalf("stat symlink: %+v %v", fi, err)
	}
	fi, err = b.Stat(ctx, "/tmp/ls/f")
	if err != nil || fi.Type != libbox.FileTypeFile || fi.Size != 3 || fi.Mode != 0o644 || time.Since(fi.ModTime) > time.Hour {
		t.Fatalf("stat file: %+v %v", fi, err)
	}
	for p, want := range map[string]bool{"/tmp/ls/f": true, "/tmp/ls/dangling": true, "/tmp/ls/none": false} {
		if ok, err := b.Exists(ctx, p); err != nil || ok != want {
			t.Fatalf("exists %s: %v %v", p, ok, err)
		}
	}
	if err := b.Mkdir(ctx, "/tmp/ls/new/a/b", true); err != nil {
		t.Fatal(err)
	}
	if err := b.Rename(ctx, "/tmp/ls/new", "/tmp/ls/moved"); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove(ctx, "/tmp/ls/link", false); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove(ctx, "/tmp/ls/moved", true); err != nil {
		t.Fatal(err)
	}
	if got := sh(t, b, "ls /tmp/ls /tmp/ls/d1"); got != "/tmp/ls:\nd1\ndangling\nf\n\n/tmp/ls/d1:\nd2\n" {
		t.Fatalf("after mkdir/rename/remove: %q", got)
	}
}

func fsErrors(t *testing.T, ctx context.Context, b *libbox.Box) {
	sh(t, b, "mkdir -p /tmp/e/full && touch /tmp/e/full/x /tmp/e/file")
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"read missing", func() error { _, err := b.ReadFile(ctx, "/tmp/e/none"); return err }(), libbox.ErrNotFound},
		{"read a directory", func() error { _, err := b.ReadFile(ctx, "/tmp/e"); return err }(), libbox.ErrFailedPrecondition},
		{"read relative", func() error { _, err := b.ReadFile(ctx, "tmp/e/file"); return err }(), libbox.ErrInvalidArgument},
		{"read with ..", func() error { _, err := b.ReadFile(ctx, "/tmp/../etc/passwd"); return err }(), libbox.ErrInvalidArgument},
		{"read with NUL", func() error { _, err := b.ReadFile(ctx, "/tmp/e/\x00"); return err }(), libbox.ErrInvalidArgument},
		{"negative offset", func() error { _, err := b.ReadFileTo(ctx, "/tmp/e/file", &bytes.Buffer{}, -1, 1); return err }(), libbox.ErrInvalidArgument},
		{"write onto a directory", b.WriteFile(ctx, "/tmp/e/full", nil, libbox.WriteOptions{}), libbox.ErrFailedPrecondition},
		{"write below a file", b.WriteFile(ctx, "/tmp/e/file/x", nil, libbox.WriteOptions{}), libbox.ErrFailedPrecondition},
		{"write without parents", b.WriteFile(ctx, "/tmp/e/no/x", nil, libbox.WriteOptions{NoParents: true}), libbox.ErrNotFound},
		{"write as an unknown user", b.WriteFile(ctx, "/tmp/e/u", nil, libbox.WriteOptions{User: "no-such-user"}), libbox.ErrInvalidArgument},
		{"write a bad mode", b.WriteFile(ctx, "/tmp/e/m", nil, libbox.WriteOptions{Mode: os.ModeDir}), libbox.ErrInvalidArgument},
		{"list a file", func() error { _, err := b.ListDir(ctx, "/tmp/e/file", 1); return err }(), libbox.ErrFailedPrecondition},
		{"list missing", func() error { _, err := b.ListDir(ctx, "/tmp/e/none", 1); return err }(), libbox.ErrNotFound},
		{"stat missing", func() error { _, err := b.Stat(ctx, "/tmp/e/none"); return err }(), libbox.ErrNotFound},
		{"mkdir existing", b.Mkdir(ctx, "/tmp/e/full", false), libbox.ErrAlreadyExists},
		{"mkdir without parent", b.Mkdir(ctx, "/tmp/e/a/b", false), libbox.ErrNotFound},
		{"remove non-empty", b.Remove(ctx, "/tmp/e/full", false), libbox.ErrFailedPrecondition},
		{"remove missing", b.Remove(ctx, "/tmp/e/none", false), libbox.ErrNotFound},
		{"remove /", b.Remove(ctx, "/", true), libbox.ErrInvalidArgument},
		{"rename missing", b.Rename(ctx, "/tmp/e/none", "/tmp/e/x"), libbox.ErrNotFound},
		{"rename a dir onto a file", b.Rename(ctx, "/tmp/e/full", "/tmp/e/file"), libbox.ErrFailedPrecondition},
		{"watch a file", func() error { _, err := b.Watch(ctx, "/tmp/e/file", false); return err }(), libbox.ErrFailedPrecondition},
		{"kill the agent", b.KillProcess(ctx, 1, 0), libbox.ErrNotFound},
		{"kill a bad signal", b.KillProcess(ctx, 1, 99), libbox.ErrInvalidArgument},
	}
	for _, c := range cases {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, c.err, c.want)
		}
	}
}

// fsEscapes: no path leaves the box root, through "..", absolute or
// climbing symlinks, or /proc/self/root.
func fsEscapes(t *testing.T, ctx context.Context, b *libbox.Box) {
	tag := fmt.Sprintf("libbox-escape-%d", time.Now().UnixNano())
	sh(t, b, "ln -s / /tmp/rootlink && ln -s ../../../../../../.. /tmp/climb")
	for _, via := range []string{"/tmp/rootlink/tmp/", "/tmp/climb/tmp/", "/proc/self/root/tmp/", "/proc/1/root/tmp/"} {
		p := via + tag
		if err := b.WriteFile(ctx, p, []byte("in"), libbox.WriteOptions{}); err != nil {
			t.Fatalf("write %s: %v", p, err)
		}
		if _, err := os.Stat("/tmp/" + tag); err == nil {
			os.Remove("/tmp/" + tag)
			t.Fatalf("write %s escaped to the host's /tmp", p)
		}
		if got := sh(t, b, "cat /tmp/"+tag+" && rm /tmp/"+tag); got != "in" {
			t.Fatalf("write %s: the box's /tmp has %q", p, got)
		}
	}
	if _, err := b.ReadFile(ctx, "/../../etc/passwd"); !errors.Is(err, libbox.ErrInvalidArgument) {
		t.Fatalf("..: %v", err)
	}
}

// fsCopyRules: CopyIn and CopyOut follow docker cp's rules; box paths
// resolve as in a chroot (relative to /, symlinks inside the box root, ".."
// stopping at it) and no copy reaches the host's files.
func fsCopyRules(t *testing.T, ctx context.Context, b *libbox.Box) {
	src := t.TempDir()
	writeHost(t, src+"/proj/a.txt", "alpha")
	writeHost(t, src+"/proj/sub/b.txt", "beta")
	writeHost(t, src+"/one.txt", "one")
	tag := fmt.Sprintf("libbox-cp-%d", time.Now().UnixNano())
	sh(t, b, "rm -rf /tmp/cp; mkdir -p /tmp/cp/dir && echo old > /tmp/cp/file && ln -sfn / /tmp/rootlink && ln -sfn ../../../../../.. /tmp/climb")
	ins := []struct{ name, host, box, check string }{
		{"directory into a directory", src + "/proj", "/tmp/cp/dir", "/tmp/cp/dir/proj/sub/b.txt"},
		{"directory contents (SRC/.)", src + "/proj/.", "/tmp/cp/dir", "/tmp/cp/dir/a.txt"},
		{"directory to a new name", src + "/proj", "/tmp/cp/new", "/tmp/cp/new/sub/b.txt"},
		{"file over a file", src + "/one.txt", "/tmp/cp/file", "/tmp/cp/file"},
		{"relative box path", src + "/one.txt", "tmp/cp/rel.txt", "/tmp/cp/rel.txt"},
		{"through a symlink to /", src + "/one.txt", "/tmp/rootlink/tmp/" + tag, "/tmp/" + tag},
		{"climbing symlink", src + "/one.txt", "/tmp/climb/tmp/" + tag + "-c", "/tmp/" + tag + "-c"},
		{".. stops at the root", src + "/one.txt", "/tmp/../../../tmp/" + tag + "-d", "/tmp/" + tag + "-d"},
	}
	for _, c := range ins {
		if _, err := b.CopyIn(ctx, c.host, c.box); err != nil {
			t.Fatalf("%s: copy in %s: %v", c.name, c.box, err)
		}
		if got := sh(t, b, "test -f "+c.check+" && echo ok"); got != "ok\n" {
			t.Fatalf("%s: copy in %s: %s not in the box", c.name, c.box, c.check)
		}
	}
	for _, p := range []string{"/tmp/" + tag, "/tmp/" + tag + "-c", "/tmp/" + tag + "-d"} {
		if _, err := os.Stat(p); err == nil {
			os.Remove(p)
			t.Fatalf("copy in reached the host's %s", p)
		}
	}
	if _, err := b.CopyIn(ctx, src+"/proj", "/tmp/cp/file"); !errors.Is(err, libbox.ErrFailedPrecondition) {
		t.Fatalf("directory onto a file: %v", err)
	}
	if _, err := b.CopyIn(ctx, src+"/one.txt", "/tmp/cp/missing/"); !errors.Is(err, libbox.ErrNotFound) {
		t.Fatalf("file to a missing directory/: %v", err)
	}
	// The example: the box's passwd through a link to its /.
	boxPasswd := sh(t, b, "cat /etc/passwd")
	out := t.TempDir()
	outs := []struct{ name, box, host, check, want string }{
		{"through a symlink to /", "/tmp/rootlink/etc/passwd", out, out + "/passwd", boxPasswd},
		{"relative box path", "etc/passwd", out + "/rel", out + "/rel", boxPasswd},
		{".. stops at the root", "/../../etc/passwd", out + "/dots", out + "/dots", boxPasswd},
		{"directory into a directory", "/tmp/cp/new", out, out + "/new/sub/b.txt", "beta"},
		{"directory contents (SRC/.)", "/tmp/cp/new/.", out, out + "/a.txt", "alpha"},
	}
	for _, c := range outs {
		if _, err := b.CopyOut(ctx, c.box, c.host); err != nil {
			t.Fatalf("%s: copy out %s: %v", c.name, c.box, err)
		}
		if got, err := os.ReadFile(c.check); err != nil || string(got) != c.want {
			t.Fatalf("%s: copy out %s: %s = %q (%v), want %q", c.name, c.box, c.check, got, err, c.want)
		}
	}
	if _, err := b.CopyOut(ctx, "/tmp/cp/new", out+"/passwd"); !errors.Is(err, libbox.ErrFailedPrecondition) {
		t.Fatalf("directory onto a file: %v", err)
	}
	sh(t, b, "rm -rf /tmp/cp /tmp/"+tag+"*")
}

func writeHost(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fsWatchBurst: 10,000 files written in a burst are all reported, or the
// watch says it overflowed.
func fsWatchBurst(t *testing.T, ctx context.Context, b *libbox.Box) {
	if err := b.Mkdir(ctx, "/tmp/burst", true); err != nil {
		t.Fatal(err)
	}
	w, err := b.Watch(ctx, "/tmp/burst", true)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const n = 10000
	start := time.Now()
	p, err := b.Exec(ctx, libbox.Command{Args: []string{"sh", "-c", fmt.Sprintf("mkdir /tmp/burst/d && cd /tmp/burst/d && seq 0 %d | sed s/^/f/ | xargs touch && chmod 600 f0 && mv f1 ../g && rm f2", n-1)}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Cancel()
	created := map[string]bool{}
	var overflow, chmod, renamed, removed bool
	timeout := time.After(5 * time.Minute)
	for !(removed && (overflow || (len(created) == n && chmod && renamed))) {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatalf("watch ended: %v", w.Err())
			}
			switch {
			case ev.Type == libbox.WatchOverflow:
				overflow = true
			case ev.Type == libbox.WatchCreate && strings.HasPrefix(ev.Path, "/tmp/burst/d/f"):
				created[ev.Path] = true
			case ev.Type == libbox.WatchChmod && ev.Path == "/tmp/burst/d/f0":
				chmod = true
			case ev.Type == libbox.WatchRename && ev.Path == "/tmp/burst/g":
				renamed = true
			case ev.Type == libbox.WatchRemove && ev.Path == "/tmp/burst/d/f2":
				removed = true
			}
		case <-timeout:
			t.Fatalf("after 5 minutes: %d of %d creates, chmod %v, rename %v, remove %v, overflow %v", len(created), n, chmod, renamed, removed, overflow)
		}
	}
	t.Logf("%d of %d creates reported in %v, overflow reported: %v", len(created), n, time.Since(start), overflow)
	if _, err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove(ctx, "/tmp/burst", true); err != nil {
		t.Fatal(err)
	}
}

// fsConcurrent: 64 file operations beside 64 execs.
func fsConcurrent(t *testing.T, ctx context.Context, b *libbox.Box) {
	var wg sync.WaitGroup
	errs := make(chan error, 128)
	for i := range 64 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			p := fmt.Sprintf("/tmp/conc/%d/file", i)
			data := []byte(strings.Repeat(fmt.Sprint(i), 1000))
			if err := b.WriteFile(ctx, p, data, libbox.WriteOptions{}); err != nil {
				errs <- err
				return
			}
			got, err := b.ReadFile(ctx, p)
			if err != nil || !bytes.Equal(got, data) {
				errs <- fmt.Errorf("read %s: %d bytes, %v", p, len(got), err)
				return
			}
			if l, err := b.ListDir(ctx, fmt.Sprintf("/tmp/conc/%d", i), 1); err != nil || len(l) != 1 {
				errs <- fmt.Errorf("list: %v %v", l, err)
			}
		}()
		go func() {
			defer wg.Done()
			r, err := b.Run(ctx, libbox.Command{Args: []string{"echo", fmt.Sprint(i)}})
			if err != nil || string(r.Stdout) != fmt.Sprintf("%d\n", i) {
				errs <- fmt.Errorf("exec %d: %q %v", i, r.Stdout, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func fsStats(t *testing.T, ctx context.Context, b *libbox.Box) {
	s0, err := b.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stats: %+v", s0)
	if s0.MemoryTotal == 0 || s0.MemoryUsed == 0 || s0.MemoryUsed > s0.MemoryTotal || s0.HostRSS == 0 || s0.Processes < 0 ||
		s0.CPUTime <= 0 || s0.Uptime <= 0 || s0.ExecsServed == 0 || s0.DiskBytes == 0 || len(s0.Boot) != 3 || s0.Boot[2].Duration <= 0 {
		t.Fatalf("implausible stats: %+v", s0)
	}
	// 100 MB held by a process in the box: dd's buffer while sleep never reads.
	hog, err := b.Exec(ctx, libbox.Command{Args: []string{"sh", "-c", "dd if=/dev/zero bs=100M count=1 2>/dev/null | sleep 60"}})
	if err != nil {
		t.Fatal(err)
	}
	defer hog.Cancel()
	deadline := time.Now().Add(60 * time.Second)
	for {
		s, err := b.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s.MemoryUsed >= s0.MemoryUsed+95<<20 && s.Processes >= s0.Processes+3 && s.ExecsRunning >= 1 {
			t.Logf("memory used %d MiB -> %d MiB, host RSS %d MiB -> %d MiB, processes %d -> %d",
				s0.MemoryUsed>>20, s.MemoryUsed>>20, s0.HostRSS>>20, s.HostRSS>>20, s0.Processes, s.Processes)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("memory used did not grow by 100 MB: %d MiB -> %d MiB (processes %d)", s0.MemoryUsed>>20, s.MemoryUsed>>20, s.Processes)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// fsProcesses: ps sees an exec another Runtime started on the (detached)
// box, and kills it by pid. A VM's agent port takes one connection at a
// time, so there the exec comes from the same Runtime.
func fsProcesses(t *testing.T, ctx context.Context, home string, b *libbox.Box, otherRuntime bool) {
	b2 := b
	if otherRuntime {
		rt2, err := libbox.Open(libbox.Options{Home: home})
		if err != nil {
			t.Fatal(err)
		}
		defer rt2.Close()
		if b2, err = rt2.Get(ctx, b.ID()); err != nil {
			t.Fatal(err)
		}
		if err := b2.Start(ctx); err != nil { // attaches
			t.Fatal(err)
		}
	}
	p, err := b2.Exec(ctx, libbox.Command{Args: []string{"sleep", "120"}})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := b.Processes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found *libbox.ProcessInfo
	for i := range ps {
		if ps[i].Pid == p.Pid() {
			found = &ps[i]
		}
	}
	if found == nil || strings.Join(found.Args, " ") != "sleep 120" || found.TTY || time.Since(found.Started) > time.Minute || found.Started.After(time.Now().Add(time.Second)) {
		t.Fatalf("ps %+v: exec %d of the other runtime missing or wrong", ps, p.Pid())
	}
	if err := b.KillProcess(ctx, p.Pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st, err := p.Wait(ctx)
	if err != nil || st.Signal != int(syscall.SIGTERM) {
		t.Fatalf("after kill: %+v %v", st, err)
	}
	if err := b.KillProcess(ctx, p.Pid(), 0); !errors.Is(err, libbox.ErrNotFound) {
		t.Fatalf("kill an exited pid: %v", err)
	}
}

// fsWatchEnds: a watch ends, with a clear error, when the box stops.
func fsWatchEnds(t *testing.T, ctx context.Context, b *libbox.Box) {
	w, err := b.Watch(ctx, "/tmp", false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(30 * time.Second)
	for {
		select {
		case _, ok := <-w.Events():
			if ok {
				continue
			}
			if err := w.Err(); !errors.Is(err, libbox.ErrUnavailable) {
				t.Fatalf("watch ended with %v, want Unavailable", err)
			}
			if _, err := b.ReadFile(ctx, "/tmp/at"); !errors.Is(err, libbox.ErrFailedPrecondition) {
				t.Fatalf("read from a stopped box: %v", err)
			}
			return
		case <-timeout:
			t.Fatal("watch still open 30s after the box stopped")
		}
	}
}
