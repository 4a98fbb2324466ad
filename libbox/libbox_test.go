package libbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libbox/libbox/internal/testutil"
	"github.com/libbox/libbox/libbox"
)

func requireSandbox(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if b, err := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); err == nil && strings.TrimSpace(string(b)) == "0" {
			t.Skip("namespace sandbox needs root or kernel.unprivileged_userns_clone=1")
		}
	}
}

func openRT(t testing.TB, home string) *libbox.Runtime {
	t.Helper()
	if home == "" {
		home = t.TempDir()
	}
	rt, err := libbox.Open(libbox.Options{Home: home, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func startBox(t testing.TB, rt *libbox.Runtime, o libbox.BoxOptions) *libbox.Box {
	t.Helper()
	requireSandbox(t)
	if o.Isolation == "" {
		o.Isolation = libbox.IsolationSandbox
	}
	ctx := ctxT(t, 3*time.Minute) // a TCG boot on a loaded machine
	b, err := rt.Create(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return b
}

func run(t testing.TB, b *libbox.Box, args ...string) libbox.Result {
	t.Helper()
	r, err := b.Run(ctxT(t, 30*time.Second), libbox.Command{Args: args})
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return r
}

func sh(t testing.TB, b *libbox.Box, script string) string {
	t.Helper()
	r := run(t, b, "sh", "-c", script)
	if r.ExitCode != 0 {
		t.Fatalf("sh -c %q: exit %d, stderr %q", script, r.ExitCode, r.Stderr)
	}
	return string(r.Stdout)
}

func TestSeedPattern(t *testing.T) {
	rt := openRT(t, "")
	b := startBox(t, rt, libbox.BoxOptions{})
	ctx := ctxT(t, 30*time.Second)
	var wg sync.WaitGroup
	for _, task := range []string{"A", "B", "C", "D"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := b.Run(ctx, libbox.Command{Args: []string{"echo", "task " + task}})
			if err != nil || r.ExitCode != 0 || string(r.Stdout) != "task "+task+"\n" {
				t.Errorf("task %s: %v %d %q", task, err, r.ExitCode, r.Stdout)
			}
		}()
	}
	wg.Wait()
}

func TestLifecycleAndPersistence(t *testing.T) {
	requireSandbox(t)
	home := t.TempDir()
	rt := openRT(t, home)
	ctx := ctxT(t, 60*time.Second)
	b, err := rt.Create(ctx, libbox.BoxOptions{Name: "web-1", Isolation: "sandbox"})
	if err != nil {
		t.Fatal(err)
	}
	if b.Info().State != libbox.StateCreated {
		t.Fatalf("state %s", b.Info().State)
	}
	if _, err := rt.Create(ctx, libbox.BoxOptions{Name: "web-1", Isolation: "sandbox"}); !errors.Is(err, libbox.ErrAlreadyExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	if _, err := b.Exec(ctx, libbox.Command{Args: []string{"true"}}); !errors.Is(err, libbox.ErrFailedPrecondition) {
		t.Fatalf("exec before start: %v", err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil { // idempotent
		t.Fatal(err)
	}
	sh(t, b, "echo persisted > /root/note")
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if s := b.Info().State; s != libbox.StateStopped {
		t.Fatalf("after stop: %s", s)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := sh(t, b, "cat /root/note"); got != "persisted\n" {
		t.Fatalf("after restart: %q", got)
	}
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"web-1", b.ID(), b.ID()[:6]} {
		g, err := rt.Get(ctx, key)
		if err != nil || g.ID() != b.ID() {
			t.Fatalf("get %q: %v", key, err)
		}
	}
	if _, err := rt.Get(ctx, "nope"); !errors.Is(err, libbox.ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
	rt.Close()

	// A fresh Runtime on the same home sees the box and its files.
	rt2 := openRT(t, home)
	list, err := rt2.List(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "web-1" || list[0].State != libbox.StateStopped {
		t.Fatalf("list: %+v %v", list, err)
	}
	b2, err := rt2.Get(ctx, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := sh(t, b2, "cat /root/note"); got != "persisted\n" {
		t.Fatalf("fresh runtime: %q", got)
	}
	if err := rt2.Remove(ctx, "web-1", false); !errors.Is(err, libbox.ErrFailedPrecondition) {
		t.Fatalf("remove running: %v", err)
	}
	if err := rt2.Remove(ctx, "web-1", true); err != nil {
		t.Fatal(err)
	}
	if list, _ := rt2.List(ctx); len(list) != 0 {
		t.Fatalf("after remove: %+v", list)
	}
	if _, err := os.Stat(filepath.Join(home, "boxes", b.ID())); !os.IsNotExist(err) {
		t.Fatalf("box dir left: %v", err)
	}
}

func TestBadOptions(t *testing.T) {
	rt := openRT(t, "")
	ctx := ctxT(t, 30*time.Second)
	cases := []struct {
		name string
		o    libbox.BoxOptions
		want error
		msg  string
	}{
		{"isolation", libbox.BoxOptions{Isolation: "docker"}, libbox.ErrInvalidArgument, `isolation "docker"`},
		{"name", libbox.BoxOptions{Isolation: "sandbox", Name: "bad name!"}, libbox.ErrInvalidArgument, "box name"},
		{"cpus", libbox.BoxOptions{Isolation: "sandbox", CPUs: -1}, libbox.ErrInvalidArgument, "cpus"},
		{"memory", libbox.BoxOptions{Isolation: "sandbox", MemoryMiB: 5}, libbox.ErrInvalidArgument, "memory"},
		{"network off with rules", libbox.BoxOptions{Isolation: "sandbox", Network: libbox.Network{Allow: []string{"pypi.org"}}}, libbox.ErrInvalidArgument, "network.enabled"},
		{"network rule", libbox.BoxOptions{Isolation: "sandbox", Network: libbox.Network{Enabled: true, Allow: []string{"bad name"}}}, libbox.ErrInvalidArgument, "network rule"},
		{"network port", libbox.BoxOptions{Isolation: "sandbox", Network: libbox.Network{Enabled: true, Ports: []libbox.PortMapping{{Box: 70000}}}}, libbox.ErrInvalidArgument, "box port"},
		{"network hosts", libbox.BoxOptions{Isolation: "sandbox", Network: libbox.Network{Enabled: true, Hosts: map[string]string{"db": "x"}}}, libbox.ErrInvalidArgument, "IPv4"},
		{"env", libbox.BoxOptions{Isolation: "sandbox", Env: []string{"NOEQ"}}, libbox.ErrInvalidArgument, "KEY=VALUE"},
		{"volume rel", libbox.BoxOptions{Isolation: "sandbox", Volumes: []libbox.Volume{{HostPath: "rel", BoxPath: "/x"}}}, libbox.ErrInvalidArgument, "absolute"},
		{"volume missing", libbox.BoxOptions{Isolation: "sandbox", Volumes: []libbox.Volume{{HostPath: "/no/such/dir", BoxPath: "/x"}}}, libbox.ErrNotFound, "does not exist"},
		{"image", libbox.BoxOptions{Isolation: "sandbox", Image: "UPPER/Case"}, libbox.ErrInvalidArgument, "UPPER/Case"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := rt.Create(ctx, c.o)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want %v containing %q", err, c.want, c.msg)
			}
		})
	}
}

func TestExecFeatures(t *testing.T) {
	rt := openRT(t, "")
	b := startBox(t, rt, libbox.BoxOptions{Env: []string{"BOXVAR=from-box"}, WorkingDir: "/tmp"})
	ctx := ctxT(t, 120*time.Second)

	r, err := b.Run(ctx, libbox.Command{Args: []string{"sh", "-c", `echo "$BOXVAR $CMDVAR $(pwd) $(id -u)"; exit 3`}, Env: []string{"CMDVAR=x y"}})
	if err != nil || r.ExitCode != 3 || string(r.Stdout) != "from-box x y /tmp 0\n" {
		t.Fatalf("env/cwd/exit: %v %d %q", err, r.ExitCode, r.Stdout)
	}
	r, err = b.Run(ctx, libbox.Command{Args: []string{"sh", "-c", "id -u; pwd"}, User: "box", Dir: "/"})
	if err != nil || string(r.Stdout) != "1000\n/\n" {
		t.Fatalf("user: %v %q %q", err, r.Stdout, r.Stderr)
	}
	if _, err := b.Run(ctx, libbox.Command{Args: []string{"nope-cmd"}}); !errors.Is(err, libbox.ErrNotFound) {
		t.Fatalf("missing command: %v", err)
	}
	if _, err := b.Run(ctx, libbox.Command{Args: []string{"true"}, Dir: "/nope"}); !errors.Is(err, libbox.ErrInvalidArgument) {
		t.Fatalf("bad cwd: %v", err)
	}
	if _, err := b.Run(ctx, libbox.Command{Args: []string{"true"}, User: "ghost"}); !errors.Is(err, libbox.ErrInvalidArgument) {
		t.Fatalf("bad user: %v", err)
	}
	// stdin
	in := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	r, err = b.Run(ctx, libbox.Command{Args: []string{"cat"}, Stdin: bytes.NewReader(in)})
	if err != nil || !bytes.Equal(r.Stdout, in) {
		t.Fatalf("stdin: %v (%d bytes)", err, len(r.Stdout))
	}
	// interactive stdin
	p, err := b.Exec(ctx, libbox.Command{Args: []string{"sh", "-c", "read a; echo got $a"}, OpenStdin: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if out, _ := p.Output(); string(out) != "got hello\n" {
		t.Fatalf("interactive: %q", out)
	}
	if _, err := p.Write([]byte("late")); !errors.Is(err, libbox.ErrFailedPrecondition) {
		t.Fatalf("write after exit: %v", err)
	}
	// tty
	r, err = b.Run(ctx, libbox.Command{Args: []string{"sh", "-c", "stty size; test -t 1 && echo tty"}, TTY: true, Rows: 40, Cols: 120})
	if out := strings.ReplaceAll(string(r.Stdout), "\r", ""); err != nil || out != "40 120\ntty\n" {
		t.Fatalf("tty: %v %q", err, out)
	}
	// timeout kills the process group
	st, err := b.Run(ctx, libbox.Command{Args: []string{"sh", "-c", "sleep 100 & sleep 100"}, Timeout: 200 * time.Millisecond})
	if !errors.Is(err, libbox.ErrDeadlineExceeded) || st.Signal != int(syscall.SIGKILL) {
		t.Fatalf("timeout: %v %+v", err, st)
	}
	if got := sh(t, b, "ps -o comm | grep -c sleep || true"); got != "0\n" {
		t.Fatalf("sleeps left after timeout: %q", got)
	}
	// signals
	p, err = b.Exec(ctx, libbox.Command{Args: []string{"sleep", "100"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	es, err := p.Wait(ctx)
	if err != nil || es.Signal != int(syscall.SIGTERM) || es.ExitCode != -1 {
		t.Fatalf("signal: %v %+v", err, es)
	}
	// Wait's context cancels and kills.
	p, err = b.Exec(ctx, libbox.Command{Args: []string{"sleep", "100"}})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = p.Wait(wctx)
	cancel()
	if !errors.Is(err, libbox.ErrDeadlineExceeded) {
		t.Fatalf("wait deadline: %v", err)
	}
	if got := sh(t, b, "ps -o comm | grep -c sleep || true"); got != "0\n" {
		t.Fatalf("sleep left after wait cancel: %q", got)
	}
	// 50 MB of output, counted by a writer.
	var cw countWriter
	p, err = b.Exec(ctx, libbox.Command{Args: []string{"head", "-c", "52428800", "/dev/zero"}, Stdout: &cw})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); err != nil || cw.n != 52428800 {
		t.Fatalf("50MB: %v %d", err, cw.n)
	}
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func TestCopyInOut(t *testing.T) {
	rt := openRT(t, "")
	b := startBox(t, rt, libbox.BoxOptions{})
	ctx := ctxT(t, 60*time.Second)
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "a.txt"), []byte("alpha\n"), 0o644)
	os.WriteFile(filepath.Join(src, "sub", "b.txt"), []byte("beta\n"), 0o600)
	if _, err := b.CopyIn(ctx, src, "/data/proj"); err != nil {
		t.Fatal(err)
	}
	if got := sh(t, b, "cat /data/proj/a.txt /data/proj/sub/b.txt"); got != "alpha\nbeta\n" {
		t.Fatalf("in box: %q", got)
	}
	sh(t, b, "echo changed >> /data/proj/a.txt")
	dst := filepath.Join(t.TempDir(), "out")
	if _, err := b.CopyOut(ctx, "/data/proj", dst); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "a.txt")); string(got) != "alpha\nchanged\n" {
		t.Fatalf("copied out: %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "sub", "b.txt")); string(got) != "beta\n" {
		t.Fatalf("copied out: %q", got)
	}
	if _, err := b.CopyOut(ctx, "/no/such", filepath.Join(t.TempDir(), "x")); !errors.Is(err, libbox.ErrNotFound) {
		t.Fatalf("missing out: %v", err)
	}
	// docker cp's rules and the escape rows run on both backends in
	// TestFSSandbox and TestFSVM (fsCopyRules).
}

func TestIsolation(t *testing.T) {
	rt := openRT(t, "")
	secret := filepath.Join(t.TempDir(), "host-secret")
	os.WriteFile(secret, []byte("secret"), 0o644)
	shared := t.TempDir()
	os.WriteFile(filepath.Join(shared, "shared.txt"), []byte("shared\n"), 0o644)
	ro := t.TempDir()
	b := startBox(t, rt, libbox.BoxOptions{Volumes: []libbox.Volume{
		{HostPath: shared, BoxPath: "/mnt/shared"},
		{HostPath: ro, BoxPath: "/mnt/ro", ReadOnly: true},
	}})
	ctx := ctxT(t, 30*time.Second)
	r, _ := b.Run(ctx, libbox.Command{Args: []string{"cat", secret}})
	if r.ExitCode == 0 {
		t.Fatalf("box read a host file: %q", r.Stdout)
	}
	if got := sh(t, b, "cat /mnt/shared/shared.txt; echo w > /mnt/shared/from-box"); got != "shared\n" {
		t.Fatalf("volume: %q", got)
	}
	if b, _ := os.ReadFile(filepath.Join(shared, "from-box")); string(b) != "w\n" {
		t.Fatalf("volume write not visible on host: %q", b)
	}
	r, _ = b.Run(ctx, libbox.Command{Args: []string{"sh", "-c", "echo x > /mnt/ro/f"}})
	if r.ExitCode == 0 || !strings.Contains(string(r.Stderr), "Read-only") {
		t.Fatalf("read-only volume writable: %d %q", r.ExitCode, r.Stderr)
	}
	if got := sh(t, b, "ls /sys/class/net"); got != "lo\n" {
		t.Fatalf("interfaces: %q", got)
	}
	if got := sh(t, b, "cat /proc/1/comm; ps -o pid | wc -l"); !strings.HasPrefix(got, "box-agent") {
		t.Fatalf("pid namespace: %q", got)
	}
	if got := sh(t, b, "hostname"); got != b.ID()[:12]+"\n" {
		t.Fatalf("hostname: %q", got)
	}
	if got := sh(t, b, "grep CapBnd /proc/self/status"); !strings.Contains(got, "00000000a80425fb") {
		t.Fatalf("capabilities: %q", got)
	}
	// Signals the agent ignores (SIGPIPE) are not ignored in what it runs:
	// `yes | head` must end yes with SIGPIPE.
	if r := run(t, b, "grep", "SigIgn", "/proc/self/status"); string(r.Stdout) != "SigIgn:\t0000000000000000\n" {
		t.Fatalf("a box process starts with ignored signals: %q", r.Stdout)
	}
}

func concurrentExecs(t *testing.T, b *libbox.Box, n int, tag string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := fmt.Sprintf("%s %d\n", tag, i)
			args := []string{"echo", tag, strconv.Itoa(i)}
			if i%16 == 0 {
				args = []string{"sh", "-c", fmt.Sprintf("sleep 0.1; echo %s %d", tag, i)}
			}
			r, err := b.Run(ctx, libbox.Command{Args: args})
			if err == nil && (r.ExitCode != 0 || string(r.Stdout) != want) {
				err = fmt.Errorf("exit %d stdout %q want %q", r.ExitCode, r.Stdout, want)
			}
			if err != nil {
				errs <- fmt.Errorf("exec %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestConcurrency(t *testing.T) {
	rt := openRT(t, "")
	b := startBox(t, rt, libbox.BoxOptions{})
	for round := 0; round < 10; round++ {
		concurrentExecs(t, b, 256, "r"+strconv.Itoa(round))
		if t.Failed() {
			t.Fatalf("round %d failed", round)
		}
	}
	// 8 boxes x 32 concurrent execs.
	boxes := make([]*libbox.Box, 8)
	var wg sync.WaitGroup
	for i := range boxes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := ctxT(t, 60*time.Second)
			bx, err := rt.Create(ctx, libbox.BoxOptions{Isolation: "sandbox", AutoRemove: true})
			if err == nil {
				err = bx.Start(ctx)
			}
			if err != nil {
				t.Error(err)
				return
			}
			boxes[i] = bx
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for i, bx := range boxes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			concurrentExecs(t, bx, 32, "box"+strconv.Itoa(i))
		}()
	}
	wg.Wait()
}

func TestAgentKilled(t *testing.T) {
	rt := openRT(t, "")
	b := startBox(t, rt, libbox.BoxOptions{})
	ctx := ctxT(t, 60*time.Second)
	killUnderLoad(t, ctx, b, 64, "sandbox")
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := sh(t, b, "echo back"); got != "back\n" {
		t.Fatalf("after restart: %q", got)
	}
}

func TestDetachAndReattach(t *testing.T) {
	requireSandbox(t)
	home := t.TempDir()
	removeAllOnCleanup(t, home)
	rt, err := libbox.Open(libbox.Options{Home: home})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 60*time.Second)
	b, err := rt.Create(ctx, libbox.BoxOptions{Isolation: "sandbox", Name: "keep", Detach: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	sh(t, b, "echo kept > /tmp/state")
	pid, _ := b.Info().Backend["pid"].(int)
	rt.Close()
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("detached box died with its runtime: %v", err)
	}
	rt2 := openRT(t, home)
	list, _ := rt2.List(ctx)
	if len(list) != 1 || list[0].State != libbox.StateRunning {
		t.Fatalf("list: %+v", list)
	}
	b2, err := rt2.Get(ctx, "keep")
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Start(ctx); err != nil { // attaches
		t.Fatal(err)
	}
	if got := sh(t, b2, "cat /tmp/state"); got != "kept\n" {
		t.Fatalf("reattached: %q", got)
	}
	if err := rt2.Remove(ctx, "keep", true); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatal("sandbox still running after remove")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHostCrash: a host process that dies leaves no sandbox behind, and a
// new Runtime reports its box stopped.
func TestHostCrash(t *testing.T) {
	requireSandbox(t)
	if os.Getenv("LIBBOX_TEST_CRASH_HOME") != "" {
		rt, err := libbox.Open(libbox.Options{Home: os.Getenv("LIBBOX_TEST_CRASH_HOME")})
		if err != nil {
			os.Exit(2)
		}
		b, err := rt.Create(context.Background(), libbox.BoxOptions{Isolation: "sandbox", Name: "crashy"})
		if err != nil || b.Start(context.Background()) != nil {
			os.Exit(3)
		}
		// The first box is forked here; once the fork server serves,
		// the next ones come from it: start boxes until one does.
		served := 0
		for i := 0; i < 100 && served == 0; i++ {
			time.Sleep(20 * time.Millisecond)
			b2, err := rt.Create(context.Background(), libbox.BoxOptions{Isolation: "sandbox"})
			if err != nil || b2.Start(context.Background()) != nil {
				os.Exit(4)
			}
			pid, _ := b2.Info().Backend["pid"].(int)
			if parentOf(pid) != os.Getpid() {
				served = pid
			}
		}
		fmt.Printf("pid=%v served=%d\n", b.Info().Backend["pid"], served)
		os.Stdout.Sync()
		time.Sleep(time.Hour)
	}
	home := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHostCrash$")
	cmd.Env = append(os.Environ(), "LIBBOX_TEST_CRASH_HOME="+home)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	n, _ := out.Read(buf)
	var pid, served int
	fmt.Sscanf(strings.TrimSpace(string(buf[:n])), "pid=%d served=%d", &pid, &served)
	if pid <= 0 || served <= 0 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper said %q (want a box forked here and one forked by the fork server)", buf[:n])
	}
	cmd.Process.Kill()
	cmd.Wait()
	// Both die: the one forked here by its Pdeathsig, the other by its
	// Pdeathsig when the fork server dies of its own.
	for _, p := range []int{pid, served} {
		deadline := time.Now().Add(5 * time.Second)
		for parentOf(p) > 0 { // alive and not yet reaped
			if time.Now().After(deadline) {
				t.Fatalf("sandbox pid %d outlived its host process", p)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	rt := openRT(t, home)
	list, err := rt.List(ctxT(t, 10*time.Second))
	if err != nil || len(list) < 2 {
		t.Fatalf("list after crash: %+v %v", list, err)
	}
	for _, b := range list {
		if b.State != libbox.StateStopped {
			t.Fatalf("box %s after crash: %s", b.ID, b.State)
		}
	}
}

// parentOf returns the parent pid of a running process; 0 when it is gone
// or a zombie.
func parentOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 2 || f[0] == "Z" || f[0] == "X" {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

func countMounts() int {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	return bytes.Count(b, []byte("\n"))
}

func TestNoLeaks(t *testing.T) {
	requireSandbox(t)
	home := t.TempDir()
	cycles := 200
	if testing.Short() {
		cycles = 20
	}
	// Warm up (image install, agent file) before measuring.
	func() {
		rt := openRT(t, home)
		b := startBox(t, rt, libbox.BoxOptions{AutoRemove: true})
		run(t, b, "true")
		rt.Close()
	}()
	runtime.GC()
	fds, mounts, gor := testutil.FDs(), countMounts(), runtime.NumGoroutine()
	rt, err := libbox.Open(libbox.Options{Home: home})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 10*time.Minute)
	for i := 0; i < cycles; i++ {
		b, err := rt.Create(ctx, libbox.BoxOptions{Isolation: "sandbox"})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
		r, err := b.Run(ctx, libbox.Command{Args: []string{"echo", "cycle"}})
		if err != nil || string(r.Stdout) != "cycle\n" {
			t.Fatalf("cycle %d: %v %q", i, err, r.Stdout)
		}
		if err := rt.Remove(ctx, b.ID(), true); err != nil {
			t.Fatal(err)
		}
	}
	rt.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		gotF, gotM, gotG := testutil.FDs(), countMounts(), runtime.NumGoroutine()
		kids, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", os.Getpid()))
		nkids := 0
		for _, k := range kids {
			b, _ := os.ReadFile(k)
			nkids += len(strings.Fields(string(b)))
		}
		if gotF <= fds && gotM <= mounts && gotG <= gor+2 && nkids == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leaks after %d cycles: fds %d→%d, mounts %d→%d, goroutines %d→%d, children %d", cycles, fds, gotF, mounts, gotM, gor, gotG, nkids)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ents, _ := os.ReadDir(filepath.Join(home, "boxes")); len(ents) > 1 { // .lock only
		t.Fatalf("box dirs left: %d", len(ents))
	}
}

// TestVMGather16 is the Go suite's VM case: one micro-VM box, 16
// concurrent execs, every output checked.
func TestVMGather16(t *testing.T) {
	requireVMHost(t)
	rt := openRT(t, "")
	ctx := ctxT(t, 5*time.Minute)
	b, err := rt.Create(ctx, libbox.BoxOptions{Isolation: libbox.IsolationVM, AutoRemove: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		if errors.Is(err, libbox.ErrUnsupported) {
			t.Skipf("no VM on this host: %v", err)
		}
		t.Fatal(err)
	}
	concurrentExecs(t, b, 16, "vm")
	vmNetworkOff(t, b)
	// Its own kernel, not the host's.
	var uts syscall.Utsname
	_ = syscall.Uname(&uts)
	host := ""
	for _, c := range uts.Release {
		if c == 0 {
			break
		}
		host += string(rune(c))
	}
	if got := strings.TrimSpace(sh(t, b, "uname -r")); got == host || got == "" {
		t.Fatalf("box kernel %q, host kernel %q: not a VM", got, host)
	}
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestVMFeaturesAndFaults: exec features, copy, persistence across
// stop/start, detach + reattach, and QEMU killed under load — all in VM
// boxes (two boots per phase under TCG, so it is one test).
func TestVMFeaturesAndFaults(t *testing.T) {
	requireVMHost(t)
	home := t.TempDir()
	removeAllOnCleanup(t, home)
	rt, err := libbox.Open(libbox.Options{Home: home, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 10*time.Minute)
	b, err := rt.Create(ctx, libbox.BoxOptions{Isolation: libbox.IsolationVM, Name: "vmbox", Detach: true, Env: []string{"BOXVAR=v"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		if errors.Is(err, libbox.ErrUnsupported) {
			t.Skipf("no VM on this host: %v", err)
		}
		t.Fatal(err)
	}
	r, err := b.Run(ctx, libbox.Command{Args: []string{"sh", "-c", `echo "$BOXVAR $X $(pwd) $(id -u)"`}, Env: []string{"X=y"}, Dir: "/tmp", User: "box"})
	if err != nil || string(r.Stdout) != "v y /tmp 1000\n" {
		t.Fatalf("env/cwd/user: %v %q %q", err, r.Stdout, r.Stderr)
	}
	r, err = b.Run(ctx, libbox.Command{Args: []string{"cat"}, Stdin: strings.NewReader("through stdin\n")})
	if err != nil || string(r.Stdout) != "through stdin\n" {
		t.Fatalf("stdin: %v %q", err, r.Stdout)
	}
	if _, err := b.Run(ctx, libbox.Command{Args: []string{"sleep", "100"}, Timeout: 300 * time.Millisecond}); !errors.Is(err, libbox.ErrDeadlineExceeded) {
		t.Fatalf("timeout: %v", err)
	}
	p, err := b.Exec(ctx, libbox.Command{Args: []string{"sleep", "100"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if st, err := p.Wait(ctx); err != nil || st.Signal != int(syscall.SIGTERM) {
		t.Fatalf("signal: %v %+v", err, st)
	}
	var cw countWriter
	p, err = b.Exec(ctx, libbox.Command{Args: []string{"head", "-c", "20971520", "/dev/zero"}, Stdout: &cw})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); err != nil || cw.n != 20971520 {
		t.Fatalf("20MB: %v %d", err, cw.n)
	}
	src := filepath.Join(t.TempDir(), "in.txt")
	os.WriteFile(src, []byte("copied in\n"), 0o644)
	if _, err := b.CopyIn(ctx, src, "/root/in.txt"); err != nil {
		t.Fatal(err)
	}
	sh(t, b, "cat /root/in.txt > /root/out.txt; echo persisted > /root/state")
	dst := filepath.Join(t.TempDir(), "out.txt")
	if _, err := b.CopyOut(ctx, "/root/out.txt", dst); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dst); string(got) != "copied in\n" {
		t.Fatalf("copy round trip: %q", got)
	}

	// Detach: the VM outlives its Runtime; a new Runtime attaches to it.
	rt.Close()
	rt2 := openRT(t, home)
	b2, err := rt2.Get(ctx, "vmbox")
	if err != nil {
		t.Fatal(err)
	}
	if st := b2.Info().State; st != libbox.StateRunning {
		t.Fatalf("detached VM state %s", st)
	}
	if err := b2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := sh(t, b2, "cat /root/state"); got != "persisted\n" {
		t.Fatalf("after reattach: %q", got)
	}
	// Persistence across stop/start.
	if err := b2.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := sh(t, b2, "cat /root/state"); got != "persisted\n" {
		t.Fatalf("after restart: %q", got)
	}

	// QEMU killed while 64 execs run (fault table row 2).
	killUnderLoad(t, ctx, b2, 64, "vm")
	if err := rt2.Remove(ctx, "vmbox", true); err != nil {
		t.Fatal(err)
	}
}

// removeAllOnCleanup force-removes every box of home when the test ends,
// so a failing test never leaves a detached box (sandbox or VM) running.
func removeAllOnCleanup(t *testing.T, home string) {
	t.Cleanup(func() {
		rt, err := libbox.Open(libbox.Options{Home: home})
		if err != nil {
			return
		}
		defer rt.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		list, _ := rt.List(ctx)
		for _, b := range list {
			_ = rt.Remove(ctx, b.ID, true)
		}
	})
}
