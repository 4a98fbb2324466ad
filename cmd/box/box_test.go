package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/libbox"
)

var boxBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "box-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	boxBin = filepath.Join(dir, "box")
	if out, err := exec.Command("go", "build", "-o", boxBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build box: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	out, err string
	code     int
}

// box runs the CLI with a home and optional stdin, under a deadline.
func box(t *testing.T, home string, stdin string, args ...string) result {
	t.Helper()
	// Longer than a VM's boot timeout (120 s), which then speaks first.
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, boxBin, args...)
	cmd.Env = append(os.Environ(), "LIBBOX_HOME="+home)
	cmd.Stdin = strings.NewReader(stdin)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("box %v hung", args)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{so.String(), se.String(), code}
}

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the CLI tests use sandbox boxes: run as root (CI does)")
	}
}

func TestRunExitCodes(t *testing.T) {
	requireRoot(t)
	home := t.TempDir()
	cases := []struct {
		args []string
		code int
		out  string
		err  string
	}{
		{[]string{"sh", "-c", "echo out; echo err >&2; exit 3"}, 3, "out\n", "err\n"},
		{[]string{"sh", "-c", "kill -9 $$"}, 137, "", ""},
		{[]string{"no-such-command"}, 127, "", "not found"},
		{[]string{"/etc/passwd"}, 126, "", "not executable"},
		{[]string{"true"}, 0, "", ""},
	}
	for _, c := range cases {
		r := box(t, home, "", append([]string{"run", "--rm", "--isolation", "sandbox", "busybox"}, c.args...)...)
		if r.code != c.code || r.out != c.out || !strings.Contains(r.err, c.err) {
			t.Errorf("run %v: code %d out %q err %q; want %d %q %q", c.args, r.code, r.out, r.err, c.code, c.out, c.err)
		}
	}
	if r := box(t, home, "", "ls", "-a", "--json"); strings.TrimSpace(r.out) != "[]" {
		t.Errorf("--rm left boxes: %s", r.out)
	}
	// Without --rm the box is kept, stopped once its command ends, and
	// runs again with start.
	if r := box(t, home, "", "run", "--name", "kept", "--isolation", "sandbox", "busybox", "sh", "-c", "exit 4"); r.code != 4 {
		t.Fatalf("run without --rm: %+v", r)
	}
	var list []struct{ Name, State string }
	if r := box(t, home, "", "ls", "-a", "--json"); json.Unmarshal([]byte(r.out), &list) != nil ||
		len(list) != 1 || list[0].Name != "kept" || list[0].State != string(libbox.StateStopped) {
		t.Fatalf("after run without --rm: %s", r.out)
	}
	if r := box(t, home, "", "start", "kept"); r.code != 0 {
		t.Fatalf("start the kept box: %+v", r)
	}
	if r := box(t, home, "", "exec", "kept", "echo", "again"); r.code != 0 || r.out != "again\n" {
		t.Fatalf("exec in the restarted box: %+v", r)
	}
	if r := box(t, home, "", "rm", "-f", "kept"); r.code != 0 {
		t.Fatalf("rm -f: %+v", r)
	}
}

func TestLibboxErrors(t *testing.T) {
	home := t.TempDir()
	cases := [][]string{
		{"run", "--isolation", "docker", "busybox", "true"},
		{"frobnicate"},
		{"exec", "nosuch", "true"},
		{"start", "nosuch"},
		{"cp", "a", "b"},
		{"run", "--bogus-flag", "busybox"},
		{"pull", "UPPER/case"},
		{"inspect", "nosuch"},
		{"rm", "-f", "nosuch"},
		{"rmi", "nosuch"},
		{"run", "-v", "/tmp", "busybox"},
		{"create", "busybox", "extra"},
		{"run", "-ix", "busybox"},
		{"warm"},
		{"warm", "busybox", "extra"},
		{"warm", "UPPER/case"},
		{"warm", "--memory", "8", "busybox"},
	}
	for _, args := range cases {
		r := box(t, home, "", args...)
		lines := strings.Split(strings.TrimSpace(r.err), "\n")
		if r.code != 125 || len(lines) != 1 || !strings.HasPrefix(lines[0], "box: ") {
			t.Errorf("box %v: code %d stderr %q; want 125 and one line", args, r.code, r.err)
		}
	}
}

func TestStdin(t *testing.T) {
	requireRoot(t)
	home := t.TempDir()
	r := box(t, home, "line one\nline two\n", "run", "--rm", "-i", "--isolation", "sandbox", "busybox", "sh", "-c", "wc -l; echo done")
	if r.code != 0 || r.out != "2\ndone\n" {
		t.Fatalf("stdin: %d %q %q", r.code, r.out, r.err)
	}
}

func TestLifecycleCopyInspect(t *testing.T) {
	requireRoot(t)
	home := t.TempDir()
	r := box(t, home, "", "create", "--name", "dev", "--isolation", "sandbox", "-e", "GREETING=hello", "busybox")
	if r.code != 0 || len(strings.TrimSpace(r.out)) != 16 {
		t.Fatalf("create: %+v", r)
	}
	if r := box(t, home, "", "exec", "dev", "true"); r.code != 125 || !strings.Contains(r.err, "start it") {
		t.Fatalf("exec on created box: %+v", r)
	}
	if r := box(t, home, "", "start", "dev"); r.code != 0 {
		t.Fatalf("start: %+v", r)
	}
	// The box outlives each CLI process.
	if r := box(t, home, "", "exec", "-e", "X=1", "dev", "sh", "-c", "echo $GREETING $X > /root/f"); r.code != 0 {
		t.Fatalf("exec: %+v", r)
	}
	if r := box(t, home, "", "exec", "dev", "cat", "/root/f"); r.out != "hello 1\n" {
		t.Fatalf("exec after exec: %+v", r)
	}
	var list []map[string]any
	r = box(t, home, "", "ls", "--json")
	if err := json.Unmarshal([]byte(r.out), &list); err != nil || len(list) != 1 || list[0]["name"] != "dev" || list[0]["state"] != "running" {
		t.Fatalf("ls --json: %v %s", err, r.out)
	}
	var info map[string]any
	r = box(t, home, "", "inspect", "dev")
	if err := json.Unmarshal([]byte(r.out), &info); err != nil || info["isolation"] != "sandbox" {
		t.Fatalf("inspect: %v %s", err, r.out)
	}
	// cp both ways.
	src := filepath.Join(t.TempDir(), "in.txt")
	os.WriteFile(src, []byte("from host\n"), 0o644)
	if r := box(t, home, "", "cp", src, "dev:/data/in.txt"); r.code != 0 {
		t.Fatalf("cp in: %+v", r)
	}
	if r := box(t, home, "", "exec", "dev", "cat", "/data/in.txt"); r.out != "from host\n" {
		t.Fatalf("after cp in: %+v", r)
	}
	dst := filepath.Join(t.TempDir(), "out.txt")
	if r := box(t, home, "", "cp", "dev:/root/f", dst); r.code != 0 {
		t.Fatalf("cp out: %+v", r)
	}
	if b, _ := os.ReadFile(dst); string(b) != "hello 1\n" {
		t.Fatalf("cp out content %q", b)
	}
	// Images: in use, so rmi is refused.
	if r := box(t, home, "", "images"); !strings.Contains(r.out, "busybox") {
		t.Fatalf("images: %+v", r)
	}
	if r := box(t, home, "", "rmi", "busybox"); r.code != 125 || !strings.Contains(r.err, "busybox") {
		t.Fatalf("rmi in use: %+v", r)
	}
	if r := box(t, home, "", "pull", "busybox"); r.code != 0 || !strings.Contains(r.out, "sha256:") {
		t.Fatalf("pull: %+v", r)
	}
	if r := box(t, home, "", "stop", "dev"); r.code != 0 {
		t.Fatalf("stop: %+v", r)
	}
	if r := box(t, home, "", "ls"); strings.Contains(r.out, "dev") {
		t.Fatalf("stopped box in ls: %s", r.out)
	}
	if r := box(t, home, "", "rm", "dev"); r.code != 0 {
		t.Fatalf("rm: %+v", r)
	}
	if r := box(t, home, "", "ls", "-a"); strings.Contains(r.out, "dev") {
		t.Fatalf("removed box in ls -a: %s", r.out)
	}
	if r := box(t, home, "", "version"); r.code != 0 || !strings.HasPrefix(r.out, "box ") {
		t.Fatalf("version: %+v", r)
	}
}

// ptyPair opens a pseudo-terminal of the given size: the master side for
// the test, the slave side for the CLI.
func ptyPair(t *testing.T, rows, cols uint16) (master, slave *os.File) {
	t.Helper()
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no /dev/ptmx (mount devpts to run the TTY test): %v", err)
	}
	master = os.NewFile(uintptr(mfd), "ptmx")
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(mfd, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(mfd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		master.Close()
		t.Fatal(err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		t.Fatal(err)
	}
	return master, slave
}

// output collects what a reader produces, for waiting on.
type output struct {
	mu   sync.Mutex
	buf  bytes.Buffer // guarded by mu
	done chan struct{}
}

func collect(r io.Reader) *output {
	o := &output{done: make(chan struct{})}
	go func() {
		defer close(o.done)
		b := make([]byte, 4096)
		for {
			n, err := r.Read(b)
			o.mu.Lock()
			o.buf.Write(b[:n])
			o.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return o
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.ReplaceAll(o.buf.String(), "\r", "")
}

// waitFor waits until the output contains s, calling poke (if set) every
// 200ms meanwhile; false after 60s.
func (o *output) waitFor(s string, poke func()) bool {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(o.String(), s) {
			return true
		}
		if poke != nil {
			poke()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

// TestTTY runs `box run -i -t` on a pseudo-terminal, as a shell would: the
// box sees a terminal of the caller's size, typed input, and a resize.
func TestTTY(t *testing.T) {
	requireRoot(t)
	home := t.TempDir()
	master, slave := ptyPair(t, 31, 97)
	defer master.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, boxBin, "run", "--rm", "-it", "--isolation", "sandbox", "busybox",
		"sh", "-c", "stty size; tty; read x; echo got $x; while read y; do stty size; done; echo bye")
	cmd.Env = append(os.Environ(), "LIBBOX_HOME="+home)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		slave.Close()
		t.Fatal(err)
	}
	slave.Close()
	out := collect(master)
	defer func() {
		if ctx.Err() == nil {
			return
		}
		t.Errorf("box -t hung; output %q", out.String())
	}()
	if !out.waitFor("31 97\n", nil) || !out.waitFor("/dev/pts/", nil) {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("terminal size or tty missing: %q", out.String())
	}
	master.Write([]byte("typed\r"))
	if !out.waitFor("got typed\n", nil) {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("typed input missing: %q", out.String())
	}
	// Resizing the terminal sends the CLI SIGWINCH; it must reach the box.
	unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 120})
	if !out.waitFor("40 120\n", func() { master.Write([]byte("\r")) }) {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("resize not forwarded: %q", out.String())
	}
	master.Write([]byte{4}) // ^D: end of input for the box's read
	err := cmd.Wait()
	<-out.done
	if err != nil || !strings.Contains(out.String(), "bye") {
		t.Fatalf("tty run: %v, output %q", err, out.String())
	}
}

// TestSignals sends the CLI SIGTERM and SIGINT: they reach the process in
// the box, and the CLI exits as the process did.
func TestSignals(t *testing.T) {
	requireRoot(t)
	home := t.TempDir()
	cases := []struct {
		sig  syscall.Signal
		args []string
		code int
		out  string
	}{
		{syscall.SIGTERM, []string{"sh", "-c", "trap 'echo caught; exit 42' TERM; echo ready; while :; do sleep 0.1; done"}, 42, "caught"},
		{syscall.SIGINT, []string{"sh", "-c", "echo ready; exec sleep 60"}, 130, ""},
	}
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		cmd := exec.CommandContext(ctx, boxBin, append([]string{"run", "--rm", "--isolation", "sandbox", "busybox"}, c.args...)...)
		cmd.Env = append(os.Environ(), "LIBBOX_HOME="+home)
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout = pw
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pw.Close()
		out := collect(pr)
		if !out.waitFor("ready", nil) {
			cmd.Process.Kill()
		} else {
			cmd.Process.Signal(c.sig)
		}
		err = cmd.Wait()
		<-out.done
		pr.Close()
		hung := ctx.Err() != nil
		cancel()
		code := cmd.ProcessState.ExitCode()
		if hung || code != c.code || !strings.Contains(out.String(), c.out) {
			t.Errorf("%v: %v code %d out %q; want %d %q", c.sig, err, code, out.String(), c.code, c.out)
		}
	}
	if r := box(t, home, "", "ls", "-a", "--json"); strings.TrimSpace(r.out) != "[]" {
		t.Errorf("--rm left boxes after signals: %s", r.out)
	}
}

// TestSharedHome: boxes made through the library show up in the CLI and the
// other way round, and a detached box outlives the CLI.
func TestSharedHome(t *testing.T) {
	requireRoot(t)
	home := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rt, err := libbox.Open(libbox.Options{Home: home})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	t.Cleanup(func() { box(t, home, "", "rm", "-f", "fromapi", "fromcli") })
	b, err := rt.Create(ctx, libbox.BoxOptions{Name: "fromapi", Isolation: libbox.IsolationSandbox, Detach: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if r := box(t, home, "", "ls"); !strings.Contains(r.out, "fromapi") {
		t.Fatalf("box ls misses the library's box: %+v", r)
	}
	if r := box(t, home, "", "exec", "fromapi", "echo", "hi"); r.code != 0 || r.out != "hi\n" {
		t.Fatalf("exec in the library's box: %+v", r)
	}
	r := box(t, home, "", "run", "-d", "--name", "fromcli", "--isolation", "sandbox", "busybox")
	if r.code != 0 || len(strings.TrimSpace(r.out)) != 16 {
		t.Fatalf("run -d: %+v", r)
	}
	cb, err := rt.Get(ctx, "fromcli")
	if err != nil || cb.Info().State != libbox.StateRunning {
		t.Fatalf("library does not see the CLI's running box: %v", err)
	}
	if err := cb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := cb.Run(ctx, libbox.Command{Args: []string{"true"}})
	if err != nil || st.ExitCode != 0 {
		t.Fatalf("exec from the library in the CLI's box: %v %+v", err, st)
	}
	// Release the library's attachments first: a Runtime still watching a
	// box that another process removes may write its state into the
	// directory being deleted (reported to the library's owner).
	rt.Close()
	if r := box(t, home, "", "rm", "-f", "fromapi", "fromcli"); r.code != 0 {
		t.Fatalf("rm -f: %+v", r)
	}
	rt2, err := libbox.Open(libbox.Options{Home: home})
	if err != nil {
		t.Fatal(err)
	}
	defer rt2.Close()
	if list, err := rt2.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("after rm -f the library still lists %v (%v)", list, err)
	}
}

// TestRunVM runs the default isolation, a micro-VM.
func TestRunVM(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed: apt-get install qemu-system-x86 qemu-utils (./build.sh deps does)")
	}
	home := t.TempDir()
	r := box(t, home, "", "run", "--rm", "busybox", "sh", "-c", "echo in-vm; exit 5")
	if r.code != 5 || r.out != "in-vm\n" {
		t.Fatalf("run in a VM: %+v", r)
	}
	if r := box(t, home, "", "ls", "-a", "--json"); strings.TrimSpace(r.out) != "[]" {
		t.Errorf("--rm left a VM box: %s", r.out)
	}
}

// testRegistry serves one small image (the builtin busybox layer) over
// plain HTTP and returns its reference.
func testRegistry(t *testing.T) string {
	t.Helper()
	return testRegistryWith(t, "test/busy:1", nil)
}

// testRegistryWith is testRegistry for the reference repoTag, with edit
// changing the image config.
func testRegistryWith(t *testing.T, repoTag string, edit func(*v1.Config)) string {
	t.Helper()
	layer, err := tarball.LayerFromFile(filepath.Join("..", "..", "libbox", "image", "builtin", "busybox.tar.gz"))
	if err != nil {
		t.Fatalf("builtin busybox layer (generated by ./build.sh prebuild): %v", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Env = []string{"PATH=/bin:/usr/bin", "FROM_REGISTRY=yes"}
	if edit != nil {
		edit(&cf.Config)
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	ref := strings.TrimPrefix(srv.URL, "http://") + "/" + repoTag
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	if err := remote.Write(r, img, remote.WithContext(ctx), remote.WithTransport(tr)); err != nil {
		t.Fatalf("push to the test registry: %v", err)
	}
	return ref
}

// TestPull pulls from a registry: plain lines when stdout is a pipe, a bar
// on a terminal, and the pulled image runs.
func TestPull(t *testing.T) {
	ref := testRegistry(t)
	host := ref[:strings.IndexByte(ref, '/')]
	t.Setenv("LIBBOX_INSECURE_REGISTRIES", host)

	home := t.TempDir()
	r := box(t, home, "", "pull", ref)
	if r.code != 0 || !strings.Contains(r.out, "pull ") || !strings.Contains(r.out, " bytes\n") || !strings.Contains(r.out, "sha256:") {
		t.Fatalf("pull to a pipe: %+v", r)
	}
	if r := box(t, home, "", "images"); !strings.Contains(r.out, "test/busy") {
		t.Fatalf("images after pull: %+v", r)
	}
	if os.Geteuid() == 0 {
		r := box(t, home, "", "run", "--rm", "--isolation", "sandbox", ref, "sh", "-c", "echo $FROM_REGISTRY")
		if r.code != 0 || r.out != "yes\n" {
			t.Fatalf("run the pulled image: %+v", r)
		}
	}
	if r := box(t, home, "", "rmi", ref); r.code != 0 {
		t.Fatalf("rmi: %+v", r)
	}
	if r := box(t, home, "", "images"); strings.Contains(r.out, "test/busy") {
		t.Fatalf("images after rmi: %+v", r)
	}

	// On a terminal: a bar redrawn in place.
	master, slave := ptyPair(t, 24, 80)
	defer master.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, boxBin, "pull", ref)
	cmd.Env = append(os.Environ(), "LIBBOX_HOME="+t.TempDir())
	cmd.Stdout, cmd.Stderr = slave, slave
	err := cmd.Start()
	slave.Close()
	if err != nil {
		t.Fatal(err)
	}
	out := collect(master)
	err = cmd.Wait()
	<-out.done
	raw := func() string { out.mu.Lock(); defer out.mu.Unlock(); return out.buf.String() }()
	if err != nil || !strings.Contains(raw, "\r") || !strings.Contains(raw, "=]") || strings.Contains(raw, " bytes\n") {
		t.Fatalf("pull on a terminal: %v, output %q", err, raw)
	}
}

func TestSplitShortFlags(t *testing.T) {
	fs := newFlags("run", "IMAGE [CMD...]")
	var f boxFlags
	f.register(fs, true)
	cases := []struct{ in, want string }{
		{"-it busybox ls -la", "-i -t busybox ls -la"},
		{"--name -it -it busybox", "--name -it -i -t busybox"},
		{"-e K=V -ti -w /x busybox", "-e K=V -t -i -w /x busybox"},
		{"-ix busybox", "-ix busybox"},
		{"--rm -- -it", "--rm -- -it"},
	}
	for _, c := range cases {
		if got := strings.Join(splitShortFlags(fs, strings.Fields(c.in)), " "); got != c.want {
			t.Errorf("%q: got %q, want %q", c.in, got, c.want)
		}
	}
}

// TestSubcommandFlags: every subcommand parses its own flags — --help
// prints its help and exits 0 without doing anything — and an operand that
// names a box or an image cannot start with '-'.
func TestSubcommandFlags(t *testing.T) {
	home := t.TempDir()
	for _, cmd := range []string{"run", "create", "start", "stop", "rm", "exec", "ls", "ps", "cp", "inspect", "pull", "images", "rmi", "version", "doctor"} {
		for _, h := range []string{"--help", "-h"} {
			r := box(t, home, "", cmd, h)
			name := cmd
			if cmd == "ps" {
				name = "ls"
			}
			if r.code != 0 || r.out != "" || !strings.HasPrefix(r.err, "usage: box "+name) {
				t.Errorf("box %s %s: code %d out %q err %q; want 0 and its usage on stderr", cmd, h, r.code, r.out, r.err)
			}
		}
	}
	for _, args := range [][]string{
		{"pull", "--", "-x"},
		{"pull", "--", "--help"},
		{"rmi", "busybox", "-f"},
		{"run", "--", "-it"},
		{"create", "--", "-x"},
		{"start", "a", "-b"},
		{"stop", "--", "-a"},
		{"rm", "-f", "--", "-a"},
		{"exec", "--", "-x", "true"},
		{"inspect", "--", "-x"},
		{"cp", "--", "-b:/x", "/tmp/x"},
	} {
		r := box(t, home, "", args...)
		if r.code != 125 || strings.Count(r.err, "\n") != 1 || !strings.Contains(r.err, "cannot start with '-'") {
			t.Errorf("box %v: code %d err %q; want 125 and one line saying names cannot start with '-'", args, r.code, r.err)
		}
	}
	for _, args := range [][]string{{"pull", "-x"}, {"images", "extra"}, {"ls", "extra"}, {"version", "extra"}, {"inspect", "a", "b"}} {
		if r := box(t, home, "", args...); r.code != 125 || strings.Count(r.err, "\n") != 1 {
			t.Errorf("box %v: code %d err %q; want 125 and one line", args, r.code, r.err)
		}
	}
	// Nothing above opened the runtime: the home is still empty.
	if ents, err := os.ReadDir(home); err != nil || len(ents) != 0 {
		t.Errorf("help and usage errors touched LIBBOX_HOME: %v %v", ents, err)
	}
}

// TestRunImageCommand: box run follows docker run (the image's Entrypoint
// with the given args, or with its Cmd; --entrypoint replaces both), takes
// the short image ID that box images prints, and box rmi / box image prune
// take care of the images (issue 20, items 1 and 9, short IDs, --platform).
func TestRunImageCommand(t *testing.T) {
	requireRoot(t)
	ref := testRegistryWith(t, "test/ep:1", func(c *v1.Config) {
		c.Entrypoint, c.Cmd, c.WorkingDir = []string{"echo", "ep"}, []string{"default"}, "/made/by/libbox"
	})
	t.Setenv("LIBBOX_INSECURE_REGISTRIES", ref[:strings.IndexByte(ref, '/')])
	home := t.TempDir()
	runIt := func(args ...string) result {
		return box(t, home, "", append([]string{"run", "--rm", "--isolation", "sandbox"}, args...)...)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{ref}, "ep default\n"},
		{[]string{ref, "x", "y"}, "ep x y\n"},
		{[]string{"--entrypoint", "sh", ref, "-c", "pwd"}, "/made/by/libbox\n"},
	} {
		if r := runIt(c.args...); r.code != 0 || r.out != c.want {
			t.Errorf("run %q: %+v, want %q", c.args, r, c.want)
		}
	}
	if r := box(t, home, "", "pull", "--platform", "linux/s390x", ref); r.code != 125 || !strings.Contains(r.err, "linux/s390x") {
		t.Errorf("pull of a platform the image lacks: %+v", r)
	}
	r := box(t, home, "", "images")
	var id string
	for _, line := range strings.Split(r.out, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == ref {
			id = f[1]
		}
	}
	if len(id) != 12 {
		t.Fatalf("no short ID for %s in %q", ref, r.out)
	}
	if r := runIt(id, "by", "id"); r.code != 0 || r.out != "ep by id\n" {
		t.Errorf("run by short ID %s: %+v", id, r)
	}
	if r := box(t, home, "", "rmi", id); r.code != 0 {
		t.Errorf("rmi by short ID: %+v", r)
	}
	if r := box(t, home, "", "images"); strings.Contains(r.out, id) {
		t.Errorf("images after rmi %s: %q", id, r.out)
	}
	if r := box(t, home, "", "image", "prune"); r.code != 0 || !strings.HasPrefix(r.out, "deleted ") {
		t.Errorf("image prune: %+v", r)
	}
	if r := box(t, home, "", "image", "nope"); r.code != 125 || !strings.Contains(r.err, "prune") {
		t.Errorf("unknown image subcommand: %+v", r)
	}
}
