package agent

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/errdefs/errgrpc"
	"github.com/libbox/libbox/guest/agentpb"
	"github.com/libbox/libbox/guest/spawner"
)

func TestMain(m *testing.M) {
	if err := spawner.SetSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, "subreaper:", err)
	}
	goleak.VerifyTestMain(m)
}

// harness is an agent served on a unix socket in a temp dir, and a client.
type harness struct {
	t      testing.TB
	agent  *Agent
	srv    *grpc.Server
	conn   *grpc.ClientConn
	client agentpb.AgentClient
	done   chan struct{}
}

func newHarness(t testing.TB, opts Options) *harness {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, agent: a, srv: NewServer(a), done: make(chan struct{})}
	go func() { defer close(h.done); _ = h.srv.Serve(ln) }()
	h.conn, err = grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	h.client = agentpb.NewAgentClient(h.conn)
	t.Cleanup(h.close)
	return h
}

func (h *harness) close() {
	h.conn.Close()
	stopServer(h.srv, 2*time.Second)
	<-h.done
	h.agent.Close()
	assertNoChildren(h.t)
}

// assertNoChildren fails when the test process still has child processes.
func assertNoChildren(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		kids := children()
		if len(kids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("child processes left: %v", kids)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func children() []string {
	var out []string
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", os.Getpid()))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		out = append(out, strings.Fields(string(b))...)
	}
	return out
}

type result struct {
	stdout, stderr bytes.Buffer
	exit           *agentpb.Exit
	pid            int32
}

// run executes start and collects everything; stdin (if non-nil) is sent
// and closed.
func run(ctx context.Context, c agentpb.AgentClient, start *agentpb.ExecStart, stdin []byte) (*result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if stdin != nil {
		start.Stdin = true
	}
	st, err := c.Exec(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Start{Start: start}}); err != nil {
		return nil, err
	}
	sendErr := make(chan error, 1)
	if stdin != nil {
		// Feed stdin while reading output: the process may not read more
		// input until its output is consumed.
		go func() {
			for off := 0; off < len(stdin); off += 16 << 10 {
				end := min(off+16<<10, len(stdin))
				if err := st.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Stdin{Stdin: stdin[off:end]}}); err != nil {
					sendErr <- err
					return
				}
			}
			sendErr <- st.CloseSend() // the end of the stream closes stdin after it
		}()
	} else {
		sendErr <- nil
	}
	defer func() { cancel(); <-sendErr }()
	r := &result{}
	for {
		ev, err := st.Recv()
		if err != nil {
			if r.exit != nil && errors.Is(err, io.EOF) {
				return r, nil
			}
			return r, err
		}
		switch e := ev.Event.(type) {
		case *agentpb.ExecEvent_Started:
			r.pid = e.Started.Pid
		case *agentpb.ExecEvent_Output:
			if e.Output.Stream == agentpb.Output_STDOUT {
				r.stdout.Write(e.Output.Data)
			} else {
				r.stderr.Write(e.Output.Data)
			}
		case *agentpb.ExecEvent_Exit:
			if r.exit != nil {
				return r, fmt.Errorf("second exit event: %v", e.Exit)
			}
			r.exit = e.Exit
		}
	}
}

func sh(script string) *agentpb.ExecStart {
	return &agentpb.ExecStart{Args: []string{"/bin/sh", "-c", script}}
}

func within(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestSeedPattern(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 30*time.Second)
	var wg sync.WaitGroup
	for _, task := range []string{"A", "B", "C", "D"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := run(ctx, h.client, &agentpb.ExecStart{Args: []string{"echo", "task " + task}}, nil)
			if err != nil {
				t.Errorf("task %s: %v", task, err)
				return
			}
			if got := r.stdout.String(); got != "task "+task+"\n" || r.exit.Status != agentpb.Exit_EXITED || r.exit.ExitCode != 0 {
				t.Errorf("task %s: stdout %q exit %v", task, got, r.exit)
			}
		}()
	}
	wg.Wait()
}

func TestConcurrentMixed(t *testing.T) {
	h := newHarness(t, Options{})
	rounds, n := 20, 256
	if testing.Short() {
		rounds = 2
	}
	for round := 0; round < rounds; round++ {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		var wg sync.WaitGroup
		var mu sync.Mutex
		failed := 0
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var start *agentpb.ExecStart
				var check func(*result) error
				switch i % 8 {
				case 0: // slow
					start = sh(fmt.Sprintf("sleep 0.05; echo slow %d", i))
					check = expectOut(fmt.Sprintf("slow %d\n", i))
				case 1: // large, verifiable
					start = &agentpb.ExecStart{Args: []string{"seq", "1", "20000"}}
					check = func(r *result) error {
						lines := strings.Split(strings.TrimSuffix(r.stdout.String(), "\n"), "\n")
						if len(lines) != 20000 || lines[19999] != "20000" || lines[0] != "1" {
							return fmt.Errorf("seq output: %d lines", len(lines))
						}
						return nil
					}
				case 2: // stderr and exit code
					start = sh(fmt.Sprintf("echo err %d >&2; exit %d", i, i%200))
					check = func(r *result) error {
						if r.stderr.String() != fmt.Sprintf("err %d\n", i) || r.exit.ExitCode != int32(i%200) {
							return fmt.Errorf("stderr %q code %d", r.stderr.String(), r.exit.ExitCode)
						}
						return nil
					}
				default:
					start = &agentpb.ExecStart{Args: []string{"echo", "fast", strconv.Itoa(i), strconv.Itoa(round)}}
					check = expectOut(fmt.Sprintf("fast %d %d\n", i, round))
				}
				r, err := run(ctx, h.client, start, nil)
				if err == nil {
					err = check(r)
				}
				if err != nil {
					mu.Lock()
					failed++
					mu.Unlock()
					t.Errorf("round %d exec %d: %v", round, i, err)
				}
			}()
		}
		wg.Wait()
		cancel()
		if failed > 0 {
			t.Fatalf("round %d: %d of %d failed", round, failed, n)
		}
	}
	if got := h.agent.Running(); got != 0 {
		t.Errorf("%d processes still tracked", got)
	}
}

func expectOut(want string) func(*result) error {
	return func(r *result) error {
		if r.exit.Status != agentpb.Exit_EXITED || r.exit.ExitCode != 0 {
			return fmt.Errorf("exit %v (stderr %q)", r.exit, r.stderr.String())
		}
		if got := r.stdout.String(); got != want {
			return fmt.Errorf("stdout %q, want %q", got, want)
		}
		return nil
	}
}

func TestStdinRoundTrip(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 30*time.Second)
	in := bytes.Repeat([]byte("line of stdin ünïcode\n"), 50000) // ~1.1 MB
	r, err := run(ctx, h.client, &agentpb.ExecStart{Args: []string{"cat"}}, in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.stdout.Bytes(), in) {
		t.Fatalf("cat returned %d bytes, sent %d", r.stdout.Len(), len(in))
	}
}

func TestSignal(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 30*time.Second)
	st, err := h.client.Exec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Start{Start: &agentpb.ExecStart{Args: []string{"sleep", "100"}}}})
	ev, err := st.Recv()
	if err != nil || ev.GetStarted() == nil {
		t.Fatalf("want started, got %v %v", ev, err)
	}
	if _, err := h.client.Signal(ctx, &agentpb.SignalRequest{ExecId: ev.GetStarted().GetExecId(), Signal: int32(syscall.SIGTERM)}); err != nil {
		t.Fatal(err)
	}
	ev, err = st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	ex := ev.GetExit()
	if ex == nil || ex.Status != agentpb.Exit_SIGNALED || ex.Signal != int32(syscall.SIGTERM) {
		t.Fatalf("want SIGNALED by SIGTERM, got %v", ev)
	}
}

func TestTimeoutKillsProcessTree(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 30*time.Second)
	start := sh("sleep 100 & echo $!; sleep 100")
	start.TimeoutMs = 300
	r, err := run(ctx, h.client, start, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.exit.Status != agentpb.Exit_TIMED_OUT || r.exit.Code != "DeadlineExceeded" || r.exit.Signal != int32(syscall.SIGKILL) {
		t.Fatalf("exit %v", r.exit)
	}
	bg, _ := strconv.Atoi(strings.TrimSpace(r.stdout.String()))
	if bg <= 0 {
		t.Fatalf("no background pid in %q", r.stdout.String())
	}
	waitGone(t, bg)
	waitGone(t, -int(r.pid))
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still alive", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestExitNotWaitingForBackgroundChild(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 10*time.Second)
	r, err := run(ctx, h.client, sh("sleep 1000 & echo hi"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := expectOut("hi\n")(r); err != nil {
		t.Fatal(err)
	}
	// Policy: the process group dies with the exec.
	waitGone(t, -int(r.pid))
}

func TestClientCancelKillsGroup(t *testing.T) {
	h := newHarness(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := h.client.Exec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Start{Start: sh("sleep 100 & sleep 100")}})
	ev, err := st.Recv()
	if err != nil || ev.GetStarted() == nil {
		t.Fatalf("want started: %v %v", ev, err)
	}
	pid := int(ev.GetStarted().Pid)
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(-pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatal("process group survived client cancel")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSpawnErrors(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 30*time.Second)
	cases := []struct {
		name   string
		start  *agentpb.ExecStart
		code   string
		msg    string
		reason agentpb.Exit_SpawnReason
	}{
		{"missing binary", &agentpb.ExecStart{Args: []string{"no-such-command-xyz"}}, "NotFound", `command "no-such-command-xyz" not found`, agentpb.Exit_NOT_FOUND},
		{"missing path", &agentpb.ExecStart{Args: []string{"/nope/bin"}}, "NotFound", `command "/nope/bin" not found`, agentpb.Exit_NOT_FOUND},
		{"not executable", &agentpb.ExecStart{Args: []string{"/etc/passwd"}}, "InvalidArgument", "not executable", agentpb.Exit_NOT_EXECUTABLE},
		{"directory", &agentpb.ExecStart{Args: []string{"/etc"}}, "InvalidArgument", "is a directory", agentpb.Exit_NOT_EXECUTABLE},
		{"bad cwd", &agentpb.ExecStart{Args: []string{"true"}, Dir: "/no/such/dir"}, "InvalidArgument", `working directory "/no/such/dir" does not exist`, agentpb.Exit_BAD_WORKING_DIR},
		{"cwd is file", &agentpb.ExecStart{Args: []string{"true"}, Dir: "/etc/passwd"}, "InvalidArgument", "is not a directory", agentpb.Exit_BAD_WORKING_DIR},
		{"relative cwd", &agentpb.ExecStart{Args: []string{"true"}, Dir: "tmp"}, "InvalidArgument", "must be an absolute path", agentpb.Exit_BAD_WORKING_DIR},
		{"unknown user", &agentpb.ExecStart{Args: []string{"true"}, User: "no-such-user"}, "InvalidArgument", `unknown user "no-such-user"`, agentpb.Exit_BAD_USER},
		{"unknown group", &agentpb.ExecStart{Args: []string{"true"}, User: "0:no-such-group"}, "InvalidArgument", `unknown group "no-such-group"`, agentpb.Exit_BAD_USER},
		{"empty args", &agentpb.ExecStart{}, "InvalidArgument", "args is empty", agentpb.Exit_SPAWN_REASON_UNSPECIFIED},
		{"bad env", &agentpb.ExecStart{Args: []string{"true"}, Env: []string{"NOEQUALS"}}, "InvalidArgument", "want KEY=VALUE", agentpb.Exit_SPAWN_REASON_UNSPECIFIED},
		{"nul in arg", &agentpb.ExecStart{Args: []string{"echo", "a\x00b"}}, "InvalidArgument", "NUL byte", agentpb.Exit_SPAWN_REASON_UNSPECIFIED},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := run(ctx, h.client, c.start, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r.exit.Status != agentpb.Exit_SPAWN_FAILED || r.exit.Code != c.code || !strings.Contains(r.exit.Error, c.msg) || r.exit.SpawnReason != c.reason {
				t.Fatalf("got %v, want SPAWN_FAILED %s %s containing %q", r.exit, c.code, c.reason, c.msg)
			}
		})
	}
}

func TestUserAndEnvAndCwd(t *testing.T) {
	h := newHarness(t, Options{Hostname: "boxhost"})
	ctx := within(t, 30*time.Second)
	r, err := run(ctx, h.client, &agentpb.ExecStart{
		Args: []string{"sh", "-c", `echo "$(id -u):$(id -g) $PWD $FOO $HOSTNAME"`},
		User: "nobody", Dir: "/tmp", Env: []string{"FOO=bar baz"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := expectOut("65534:65534 /tmp bar baz boxhost\n")(r); err != nil {
		t.Fatal(err)
	}
	r, err = run(ctx, h.client, &agentpb.ExecStart{Args: []string{"sh", "-c", "id -u; id -g"}, User: "1234:4321"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := expectOut("1234\n4321\n")(r); err != nil {
		t.Fatal(err)
	}
}

func TestHugeEnv(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 30*time.Second)
	env := make([]string, 10000)
	for i := range env {
		env[i] = fmt.Sprintf("V%d=välue-%d-日本語", i, i)
	}
	r, err := run(ctx, h.client, &agentpb.ExecStart{Args: []string{"sh", "-c", `echo "$V9999"; env | grep -c '^V[0-9]*='`}, Env: env}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := expectOut("välue-9999-日本語\n10000\n")(r); err != nil {
		t.Fatal(err)
	}
}

func TestLargeOutput(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 120*time.Second)
	const size = 50 << 20
	st, err := h.client.Exec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Start{Start: &agentpb.ExecStart{Args: []string{"head", "-c", strconv.Itoa(size), "/dev/zero"}}}})
	var n int
	var ex *agentpb.Exit
	for {
		ev, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if o := ev.GetOutput(); o != nil {
			n += len(o.Data)
		}
		if e := ev.GetExit(); e != nil {
			ex = e
		}
	}
	if n != size || ex == nil || ex.ExitCode != 0 {
		t.Fatalf("got %d bytes, exit %v", n, ex)
	}
}

func TestTTY(t *testing.T) {
	h := newHarness(t, Options{})
	ctx := within(t, 30*time.Second)
	start := &agentpb.ExecStart{Args: []string{"sh", "-c", "stty size; tty; test -t 0 && echo isatty"}, Tty: true, TtySize: &agentpb.TtySize{Rows: 33, Cols: 101}}
	r, err := run(ctx, h.client, start, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := strings.ReplaceAll(r.stdout.String(), "\r", "")
	if !strings.Contains(out, "33 101\n") || !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "isatty") || r.exit.ExitCode != 0 {
		t.Fatalf("tty output %q exit %v", out, r.exit)
	}
}

// chrootAgent returns an agent whose root is a temp dir holding a busybox.
func chrootRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox not installed: apt-get install busybox-static (./build.sh deps does)")
	}
	for _, d := range []string{"bin", "etc", "tmp", "data"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, app := range []string{"sh", "cat", "echo", "ls", "id"} {
		if err := os.Symlink("/bin/busybox", filepath.Join(root, "bin", app)); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nbox:x:1000:1000::/tmp:/bin/sh\n"), 0o644)
	_ = os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\nbox:x:1000:\n"), 0o644)
	return root
}

func TestChrootExec(t *testing.T) {
	root := chrootRoot(t)
	if err := os.WriteFile(filepath.Join(root, "data/only-in-box"), []byte("inside\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Options{Root: root})
	ctx := within(t, 30*time.Second)
	r, err := run(ctx, h.client, &agentpb.ExecStart{Args: []string{"sh", "-c", "cat /data/only-in-box; id -u; pwd"}, User: "box"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := expectOut("inside\n1000\n/tmp\n")(r); err != nil {
		t.Fatal(err)
	}
}

func tarOf(t *testing.T, entries ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		body := h.Linkname
		if h.Typeflag == tar.TypeReg {
			body = "content of " + h.Name
			h.Size = int64(len(body))
			h.Linkname = ""
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			_, _ = tw.Write([]byte(body))
		}
	}
	_ = tw.Close()
	return buf.Bytes()
}

func upload(ctx context.Context, c agentpb.AgentClient, dir string, data []byte) error {
	return uploadWith(ctx, c, &agentpb.UploadRequest{Dir: dir}, data)
}

func uploadWith(ctx context.Context, c agentpb.AgentClient, first *agentpb.UploadRequest, data []byte) error {
	st, err := c.Upload(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(first); err != nil {
		return err
	}
	for off := 0; off < len(data); off += 8192 {
		end := min(off+8192, len(data))
		if err := st.Send(&agentpb.UploadRequest{Tar: data[off:end]}); err != nil {
			break // the server answered early; CloseAndRecv has the error
		}
	}
	_, err = st.CloseAndRecv()
	return errgrpc.FromGRPC(err)
}

func download(ctx context.Context, c agentpb.AgentClient, p string) (map[string]string, error) {
	st, err := c.Download(ctx, &agentpb.DownloadRequest{Path: p})
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		for {
			ch, err := st.Recv()
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				pw.CloseWithError(errgrpc.FromGRPC(err))
				return
			}
			_, _ = pw.Write(ch.Tar)
		}
	}()
	defer pr.Close()
	out := map[string]string{}
	tr := tar.NewReader(pr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		b, _ := io.ReadAll(tr)
		switch h.Typeflag {
		case tar.TypeDir:
			out[h.Name] = "<dir>"
		case tar.TypeSymlink:
			out[h.Name] = "-> " + h.Linkname
		default:
			out[h.Name] = string(b)
		}
	}
}

func TestUploadDownload(t *testing.T) {
	root := chrootRoot(t)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Options{Root: root})
	ctx := within(t, 30*time.Second)
	data := tarOf(t,
		&tar.Header{Name: "proj/", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "proj/a.txt", Typeflag: tar.TypeReg},
		&tar.Header{Name: "proj/sub/b.txt", Typeflag: tar.TypeReg},
		&tar.Header{Name: "proj/link", Typeflag: tar.TypeSymlink, Linkname: "a.txt"},
		&tar.Header{Name: "proj/hard", Typeflag: tar.TypeLink, Linkname: "proj/a.txt"},
	)
	if err := upload(ctx, h.client, "/work", data); err != nil {
		t.Fatal(err)
	}
	got, err := download(ctx, h.client, "/work/proj")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"proj/": "<dir>", "proj/a.txt": "content of proj/a.txt", "proj/sub/": "<dir>",
		"proj/sub/b.txt": "content of proj/sub/b.txt", "proj/link": "-> a.txt", "proj/hard": "content of proj/a.txt",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("download %s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	// The box sees the files too.
	r, err := run(ctx, h.client, &agentpb.ExecStart{Args: []string{"cat", "/work/proj/sub/b.txt"}}, nil)
	if err != nil || r.stdout.String() != "content of proj/sub/b.txt" {
		t.Fatalf("cat in box: %q %v", r.stdout.String(), err)
	}

	escapes := []struct {
		name string
		dir  string
		tar  []byte
		msg  string
	}{
		{"dotdot entry", "/work", tarOf(t, &tar.Header{Name: "../evil", Typeflag: tar.TypeReg}), "escapes the target directory"},
		{"absolute entry", "/work", tarOf(t, &tar.Header{Name: "/etc/evil", Typeflag: tar.TypeReg}), "absolute or empty names"},
		{"through symlink dir", "/escape", tarOf(t, &tar.Header{Name: "evil", Typeflag: tar.TypeReg}), "escapes the box root"},
		{"entry through symlink", "/", tarOf(t, &tar.Header{Name: "escape/evil", Typeflag: tar.TypeReg}), "escapes the box root"},
		{"symlink then write", "/work", tarOf(t,
			&tar.Header{Name: "s", Typeflag: tar.TypeSymlink, Linkname: outside},
			&tar.Header{Name: "s/evil", Typeflag: tar.TypeReg}), "escapes the box root"},
		{"hardlink outside", "/work", tarOf(t, &tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}), "escapes the target directory"},
		{"dotdot dir", "/work/../..", tarOf(t, &tar.Header{Name: "x", Typeflag: tar.TypeReg}), "must not contain '..'"},
		{"relative dir", "work", tarOf(t, &tar.Header{Name: "x", Typeflag: tar.TypeReg}), "must be absolute"},
	}
	for _, c := range escapes {
		t.Run(c.name, func(t *testing.T) {
			err := upload(ctx, h.client, c.dir, c.tar)
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want InvalidArgument containing %q", err, c.msg)
			}
		})
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("files written outside the root: %v", ents)
	}
	if _, err := download(ctx, h.client, ""); !errdefs.IsInvalidArgument(err) {
		t.Errorf("download of an empty path: got %v, want InvalidArgument", err)
	}
	if _, err := download(ctx, h.client, "/no/such"); !errdefs.IsNotFound(err) {
		t.Errorf("download missing: got %v, want NotFound", err)
	}
}

func TestInfoAndShutdown(t *testing.T) {
	h := newHarness(t, Options{Version: "1.2.3"})
	ctx := within(t, 30*time.Second)
	info, err := h.client.Info(ctx, &agentpb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.AgentVersion != "1.2.3" || info.ProtocolVersion != ProtocolVersion || len(info.Features) == 0 {
		t.Fatalf("info %v", info)
	}
	st, err := h.client.Exec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Start{Start: sh("trap 'exit 7' TERM; echo ready; sleep 100 & wait")}})
	if ev, err := st.Recv(); err != nil || ev.GetStarted() == nil {
		t.Fatalf("started: %v %v", ev, err)
	}
	if ev, err := st.Recv(); err != nil || string(ev.GetOutput().GetData()) != "ready\n" {
		t.Fatalf("want ready: %v %v", ev, err)
	}
	if _, err := h.client.Shutdown(ctx, &agentpb.ShutdownRequest{GraceMs: 2000, Exit: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.agent.ShutdownRequested():
	case <-ctx.Done():
		t.Fatal("shutdown not requested")
	}
	ev, err := st.Recv()
	if err != nil || ev.GetExit() == nil || ev.GetExit().ExitCode != 7 {
		t.Fatalf("want exit 7 after SIGTERM, got %v %v", ev, err)
	}
}
