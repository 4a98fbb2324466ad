//go:build linux

package qemu

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
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
	"github.com/libbox/libbox/internal/testutil"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/internal/vmboot"
	"github.com/libbox/libbox/libbox/network"
)

// The VM tests share one booted box (TCG boots take seconds). It is
// started lazily by the first test that needs it and stopped by TestMain.
var shared struct {
	once  sync.Once
	err   error
	home  string
	agent string
	image string
	b     *Backend
	spec  backend.Spec
	inst  backend.Instance
	cl    *client
	net   *network.Network // the shared VM's network once it has one
}

var workDir string // removed by TestMain

// testAccel is the accelerator the tests use: $LIBBOX_ACCEL, else TCG.
var testAccel string

// testOptions are the backend options of the tests: the accelerator, and
// the kernel of $LIBBOX_KERNEL (and $LIBBOX_KERNEL_MODULES) when set.
func testOptions(home string, logf func(string, ...any)) Options {
	return Options{Home: home, Logf: logf, Accel: testAccel,
		Kernel: os.Getenv("LIBBOX_KERNEL"), KernelModules: os.Getenv("LIBBOX_KERNEL_MODULES")}
}

func TestMain(m *testing.M) {
	flag.Parse()
	// KVM is probed at run time by the backend; the tests default to TCG,
	// which every CI machine has (set LIBBOX_ACCEL=kvm to test KVM).
	if testAccel = os.Getenv("LIBBOX_ACCEL"); testAccel == "" {
		testAccel = AccelTCG
	}
	if os.Getenv("LIBBOX_QEMU_TEST_CHILD") != "" {
		childStart() // TestDiesWithHost's child: never returns
	}
	var err error
	workDir, err = os.MkdirTemp("", "libbox-qemu-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The launcher thread (package launch) lives for good by design; every watcher and dial
	// goroutine must have ended, and fds be back.
	testutil.Main(m, stopShared, goleak.IgnoreTopFunction("github.com/libbox/libbox/libbox/internal/launch.loop"))
}

// stopShared stops the shared VM and removes the test files.
func stopShared() error {
	defer os.RemoveAll(workDir)
	if shared.cl != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		shared.cl.Shutdown(ctx, &agentpb.ShutdownRequest{Exit: true})
		cancel()
		shared.cl.Close()
	}
	if shared.inst != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := shared.inst.Stop(ctx); err != nil {
			return fmt.Errorf("stopping the shared VM: %w", err)
		}
	}
	if shared.net != nil {
		shared.net.Close()
	}
	return nil
}

// requireKernel skips (or fails in CI) when no guest kernel is installed.
func requireKernel(t testing.TB) vmboot.Kernel {
	t.Helper()
	k, err := vmboot.FindKernel(os.Getenv("LIBBOX_KERNEL"), os.Getenv("LIBBOX_KERNEL_MODULES"))
	testutil.Require(t, err, "./build.sh deps")
	return k
}

// requireVM skips (or fails in CI) unless a box VM can boot here.
func requireVM(t testing.TB) {
	t.Helper()
	testutil.RequireQEMU(t)
	_, err := vmboot.FindBusybox()
	testutil.Require(t, err, "./build.sh deps")
	requireKernel(t)
}

// fixtures builds the agent (or uses build/bin/box-agent) and a busybox
// image root, once.
func fixtures(t testing.TB) {
	t.Helper()
	if shared.agent != "" {
		return
	}
	shared.home = filepath.Join(workDir, "home")
	shared.agent = filepath.Join(workDir, "box-agent")
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	cmd := exec.Command("go", "build", "-trimpath", "-o", shared.agent, "./guest/cmd/box-agent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the agent: %v\n%s", err, b)
	}
	shared.image = filepath.Join(workDir, "image")
	bb, err := vmboot.FindBusybox()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"bin", "etc", "root"} {
		os.MkdirAll(filepath.Join(shared.image, d), 0o755)
	}
	testutil.Must(t, os.WriteFile(filepath.Join(shared.image, "bin/busybox"), data, 0o755))
	for _, l := range []string{"sh", "echo", "cat", "ls", "sync", "sleep", "mount", "head"} {
		testutil.Must(t, os.Symlink("busybox", filepath.Join(shared.image, "bin", l)))
	}
	testutil.Must(t, os.WriteFile(filepath.Join(shared.image, "etc/hello.txt"), []byte("hello from the image\n"), 0o644))
}

func newSpec(t testing.TB, id string) backend.Spec {
	dir := filepath.Join(workDir, id)
	testutil.Must(t, os.MkdirAll(dir, 0o700))
	return backend.Spec{ID: id, Dir: dir, ImageRoot: shared.image, ImageID: "busybox-test", AgentPath: shared.agent, Hostname: id}
}

// sharedVM returns the shared box, booting it on first use.
func sharedVM(t *testing.T) (backend.Instance, *client) {
	t.Helper()
	requireVM(t)
	shared.once.Do(func() {
		fixtures(t)
		shared.b, shared.err = New(testOptions(shared.home, t.Logf))
		if shared.err != nil {
			return
		}
		shared.spec = newSpec(t, "shared")
		if os.Geteuid() == 0 { // virtiofsd needs root
			ro, rw := filepath.Join(workDir, "vol-ro"), filepath.Join(workDir, "vol rw")
			os.MkdirAll(ro, 0o755)
			os.MkdirAll(rw, 0o755)
			os.WriteFile(filepath.Join(ro, "from-host.txt"), []byte("host data\n"), 0o644)
			shared.spec.Volumes = []backend.Volume{
				{HostPath: ro, BoxPath: "/mnt/ro", ReadOnly: true},
				{HostPath: rw, BoxPath: "/mnt/my rw"},
			}
		}
		shared.inst, shared.cl, shared.err = bootBox(t, shared.b, shared.spec)
	})
	if shared.err != nil {
		t.Fatalf("shared VM: %v", shared.err)
	}
	if shared.inst == nil || shared.cl == nil {
		t.Fatal("the shared VM is gone after an earlier failure")
	}
	return shared.inst, shared.cl
}

// boot starts a box and waits until its agent answers Ping.
func bootBox(t testing.TB, b *Backend, spec backend.Spec) (backend.Instance, *client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultBootTimeout)
	defer cancel()
	start := time.Now()
	inst, err := b.Start(ctx, spec)
	if err != nil {
		return nil, nil, err
	}
	cl, err := waitReady(ctx, inst, spec.Dir)
	if err != nil {
		inst.Kill()
		inst.Stop(context.Background())
		return nil, nil, err
	}
	t.Logf("box %s ready in %s (%v)", spec.ID, time.Since(start).Round(time.Millisecond), inst.Info()["accel"])
	return inst, cl, nil
}

type client struct {
	*grpc.ClientConn
	agentpb.AgentClient
}

// waitReady pings the agent until it answers, as the runtime does; on
// timeout the error carries the console tail.
func waitReady(ctx context.Context, inst backend.Instance, dir string) (*client, error) {
	conn, err := grpc.NewClient("passthrough:///agent",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return inst.Dial(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	cl := &client{conn, agentpb.NewAgentClient(conn)}
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cl.Ping(pctx, &agentpb.PingRequest{}, grpc.WaitForReady(true))
		cancel()
		if err == nil {
			return cl, nil
		}
		select {
		case <-inst.Done():
			conn.Close()
			_, derr := inst.Dial(ctx)
			return nil, derr
		default:
		}
		if ctx.Err() != nil {
			conn.Close()
			return nil, errdefs.New(errdefs.DeadlineExceeded, "vm boot timed out: %v; console:\n%s", err, vmboot.ConsoleTail(dir, 20))
		}
	}
}

type execResult struct {
	stdout, stderr string
	exit           *agentpb.Exit
}

func run(ctx context.Context, cl *client, args ...string) (execResult, error) {
	var r execResult
	st, err := cl.Exec(ctx)
	if err != nil {
		return r, err
	}
	if err := st.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Start{Start: &agentpb.ExecStart{Args: args}}}); err != nil {
		return r, err
	}
	st.CloseSend()
	var out, errb strings.Builder
	for {
		ev, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return r, err
		}
		switch e := ev.Event.(type) {
		case *agentpb.ExecEvent_Output:
			if e.Output.Stream == agentpb.Output_STDERR {
				errb.Write(e.Output.Data)
			} else {
				out.Write(e.Output.Data)
			}
		case *agentpb.ExecEvent_Exit:
			r.exit = e.Exit
		}
	}
	r.stdout, r.stderr = out.String(), errb.String()
	if r.exit == nil {
		return r, errors.New("exec stream ended without an exit event")
	}
	return r, nil
}

func mustRun(t *testing.T, cl *client, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := run(ctx, cl, args...)
	if err != nil {
		t.Fatalf("exec %q: %v", args, err)
	}
	if r.exit.Status != agentpb.Exit_EXITED || r.exit.ExitCode != 0 {
		t.Fatalf("exec %q: %v (stderr %q)", args, r.exit, r.stderr)
	}
	return r.stdout
}

func TestVMPing(t *testing.T) {
	inst, cl := sharedVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.Ping(ctx, &agentpb.PingRequest{}); err != nil {
		t.Fatal(err)
	}
	info, err := cl.Info(ctx, &agentpb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !info.Pid1 || info.Root != "/mnt/root" {
		t.Errorf("agent info: pid1=%v root=%q, want PID 1 chrooting into /mnt/root", info.Pid1, info.Root)
	}
	if got := inst.Info()["accel"]; got != testAccel {
		t.Errorf("Info accel = %v, want %s", got, testAccel)
	}
	if got := strings.TrimSpace(mustRun(t, cl, "cat", "/proc/sys/kernel/hostname")); got != shared.spec.Hostname {
		t.Errorf("hostname %q, want %q", got, shared.spec.Hostname)
	}
}

func TestVMConcurrentExec(t *testing.T) {
	_, cl := sharedVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	const n = 16
	errs := make(chan error, n)
	for i := range n {
		go func() {
			want := fmt.Sprintf("hello %d", i)
			r, err := run(ctx, cl, "echo", want)
			switch {
			case err != nil:
				errs <- fmt.Errorf("exec %d: %w", i, err)
			case r.exit.Status != agentpb.Exit_EXITED || r.exit.ExitCode != 0:
				errs <- fmt.Errorf("exec %d: %v", i, r.exit)
			case r.stdout != want+"\n":
				errs <- fmt.Errorf("exec %d: stdout %q, want %q", i, r.stdout, want+"\n")
			default:
				errs <- nil
			}
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestVMTransportLoad pushes 64 concurrent execs for 10 rounds and a 20 MB
// output through the virtio-serial stream.
func TestVMTransportLoad(t *testing.T) {
	_, cl := sharedVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	start := time.Now()
	for round := range 10 {
		const n = 64
		errs := make(chan error, n)
		for i := range n {
			go func() {
				want := fmt.Sprintf("r%d-%d", round, i)
				r, err := run(ctx, cl, "echo", want)
				if err == nil && (r.exit.ExitCode != 0 || r.stdout != want+"\n") {
					err = fmt.Errorf("exec %s: %v %q", want, r.exit, r.stdout)
				}
				errs <- err
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("640 execs in %s", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	r, err := run(ctx, cl, "sh", "-c", "head -c 20971520 /dev/zero")
	if err != nil || r.exit.ExitCode != 0 || len(r.stdout) != 20<<20 {
		t.Fatalf("20 MB output: %v, %v, %d bytes", err, r.exit, len(r.stdout))
	}
	t.Logf("20 MB out in %s", time.Since(start).Round(time.Millisecond))
}

func TestVMImageRoot(t *testing.T) {
	_, cl := sharedVM(t)
	if got := mustRun(t, cl, "cat", "/etc/hello.txt"); got != "hello from the image\n" {
		t.Fatalf("image file: %q", got)
	}
	mounts := mustRun(t, cl, "cat", "/proc/mounts")
	for _, want := range []string{"/dev/vda / ext4", " /proc proc", " /dev devtmpfs", " /dev/pts devpts", " /tmp tmpfs", " /dev/shm tmpfs"} {
		if !strings.Contains(mounts, want) {
			t.Errorf("no %q in the box's /proc/mounts:\n%s", want, mounts)
		}
	}
}

func TestVMVolumes(t *testing.T) {
	_, cl := sharedVM(t)
	if len(shared.spec.Volumes) == 0 {
		testutil.RequireRoot(t, "VM volumes (virtiofsd)")
	}
	if got := mustRun(t, cl, "cat", "/mnt/ro/from-host.txt"); got != "host data\n" {
		t.Fatalf("read-only volume: %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, script := range []string{"echo x > /mnt/ro/new.txt", "mount -o remount,rw /mnt/ro && echo x > /mnt/ro/new.txt"} {
		r, err := run(ctx, cl, "sh", "-c", script)
		if err != nil {
			t.Fatal(err)
		}
		if r.exit.ExitCode == 0 {
			t.Errorf("%q succeeded on a read-only volume", script)
		}
	}
	if _, err := os.Stat(filepath.Join(shared.spec.Volumes[0].HostPath, "new.txt")); err == nil {
		t.Error("a read-only volume was written")
	}
	mustRun(t, cl, "sh", "-c", "echo from box > '/mnt/my rw/out.txt'")
	b, err := os.ReadFile(filepath.Join(shared.spec.Volumes[1].HostPath, "out.txt"))
	if err != nil || string(b) != "from box\n" {
		t.Fatalf("rw volume on the host: %q, %v", b, err)
	}
}

// TestVMReconnect: the host goes away and comes back several times (the
// agent must hand out a fresh, aligned stream each time).
func TestVMReconnect(t *testing.T) {
	inst, cl := sharedVM(t)
	cl.Close() // QEMU's socket serves one client at a time
	shared.cl = nil
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 8 {
		start := time.Now()
		c, err := waitReady(ctx, inst, shared.spec.Dir)
		if err != nil {
			t.Fatalf("reconnect %d: %v", i, err)
		}
		t.Logf("reconnect %d: %s", i, time.Since(start).Round(time.Millisecond))
		if i%2 == 1 { // leave with an exec still streaming
			st, err := c.Exec(ctx)
			testutil.Must(t, err)
			testutil.Must(t, st.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Start{Start: &agentpb.ExecStart{Args: []string{"sh", "-c", "while :; do echo spam; done"}}}}))
			st.Recv()
		} else if got := mustRun(t, c, "echo", "again"); got != "again\n" {
			t.Fatalf("reconnect %d: %q", i, got)
		}
		c.Close()
	}
	c, err := waitReady(ctx, inst, shared.spec.Dir)
	if err != nil {
		t.Fatalf("final reconnect: %v", err)
	}
	shared.cl = c
	mustRun(t, c, "echo", "ok")
}

// TestDiesWithHost: a box that is not detached dies with the host process.
func TestDiesWithHost(t *testing.T) {
	requireVM(t)
	fixtures(t)
	spec := newSpec(t, "orphan")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "LIBBOX_QEMU_TEST_CHILD="+spec.Dir, "LIBBOX_TEST_HOME="+shared.home,
		"LIBBOX_TEST_AGENT="+shared.agent, "LIBBOX_TEST_IMAGE="+shared.image)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var pid int
	if _, err := fmt.Sscanf(string(out), "qemu %d", &pid); err != nil {
		t.Fatalf("child said %q", out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("qemu %d outlived its host process", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// childStart starts a box from a child test process, prints QEMU's pid and
// exits without stopping it.
func childStart() {
	dir := os.Getenv("LIBBOX_QEMU_TEST_CHILD")
	b, err := New(testOptions(os.Getenv("LIBBOX_TEST_HOME"), nil))
	if err == nil {
		var inst backend.Instance
		inst, err = b.Start(context.Background(), backend.Spec{ID: "orphan", Dir: dir, ImageRoot: os.Getenv("LIBBOX_TEST_IMAGE"),
			ImageID: "busybox-test", AgentPath: os.Getenv("LIBBOX_TEST_AGENT")})
		if err == nil {
			fmt.Printf("qemu %d\n", inst.Info()["pid"])
			os.Exit(0)
		}
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

// TestVMPersistDetachAttach writes a file, powers the box off, starts it
// again on the same overlay (detached this time), reattaches from its
// state through a new backend, and reads the file back.
func TestVMPersistDetachAttach(t *testing.T) {
	inst, cl := sharedVM(t)
	mustRun(t, cl, "sh", "-c", "echo persisted > /root/state.txt && sync")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cl.Shutdown(ctx, &agentpb.ShutdownRequest{Exit: true}); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	stopStart := time.Now()
	if err := inst.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	t.Logf("stopped %s after the agent's shutdown", time.Since(stopStart).Round(time.Millisecond))
	select {
	case <-inst.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if err := inst.Stop(ctx); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	cl.Close()
	shared.inst, shared.cl = nil, nil

	spec := shared.spec
	spec.Detach = true
	spec.Network = true // and a NIC this time, behind a network of this process
	nw, err := network.New(network.Config{Hosts: map[string]string{"probe.test": "10.1.2.3"}, DNS: []string{"127.0.0.1:9"}})
	testutil.Must(t, err)
	shared.net = nw
	spec.NetLink = &backend.NetworkLink{
		Address: netip.PrefixFrom(network.BoxIP, network.Subnet.Bits()), Gateway: network.GatewayIP,
		MAC: network.BoxMAC, MTU: 1500,
		Attach: func(f *os.File, stream bool) error {
			if !stream {
				t.Error("qemu attached a frame-per-read link")
			}
			return nw.Attach(f, network.FrameLength32)
		},
	}
	inst, cl, err = bootBox(t, shared.b, spec)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() { // a detached QEMU would outlive the test binary
			inst.Kill()
		}
	})
	st := inst.State()
	cl.Close() // the host goes away: the agent must serve the next one
	b2, err := New(testOptions(shared.home, nil))
	testutil.Must(t, err)
	att, err := b2.Attach(ctx, spec, st)
	if err != nil {
		inst.Kill()
		t.Fatalf("attach: %v", err)
	}
	shared.inst = att
	inst.Release() // the first handle lets go; the VM keeps running
	select {
	case <-inst.Done():
	default:
		t.Fatal("Done not closed by Release")
	}
	cl, err = waitReady(ctx, att, spec.Dir)
	if err != nil {
		t.Fatalf("agent after reattach: %v", err)
	}
	shared.cl = cl
	if got := mustRun(t, cl, "cat", "/root/state.txt"); got != "persisted\n" {
		t.Fatalf("after restart: %q", got)
	}
	if got := mustRun(t, cl, "/bin/busybox", "ip", "-4", "-o", "addr", "show", "eth0"); !strings.Contains(got, "inet 192.168.127.2/24") {
		t.Errorf("Network: eth0 not configured from the boot parameter: %q", got)
	}
	// The gateway's DNS answers through the link (frames both ways).
	if got := mustRun(t, cl, "/bin/busybox", "nslookup", "probe.test"); !strings.Contains(got, "10.1.2.3") {
		t.Errorf("Network: DNS through the gateway: %q", got)
	}
	if nw.Info().RxBytes == 0 || nw.Info().TxBytes == 0 {
		t.Errorf("Network: no frames counted: %+v", nw.Info())
	}
	// Attach to a box that is gone is NotFound.
	bad := []byte(`{"pid":999999999,"start_time":1,"agent_socket":"/nonexistent"}`)
	if _, err := b2.Attach(ctx, spec, bad); !errdefs.IsNotFound(err) {
		t.Fatalf("attach to a gone box: %v, want NotFound", err)
	}
}

// TestVMZKill is last: it kills the shared VM's QEMU under running execs.
func TestVMZKill(t *testing.T) {
	inst, cl := sharedVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 16
	errs := make(chan error, n)
	started := make(chan struct{}, n)
	for range n {
		go func() {
			st, err := cl.Exec(ctx)
			if err == nil {
				err = st.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Start{Start: &agentpb.ExecStart{Args: []string{"sleep", "600"}}}})
			}
			if err == nil {
				_, err = st.Recv() // Started
			}
			started <- struct{}{}
			if err != nil {
				errs <- err
				return
			}
			for {
				if _, err = st.Recv(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range n {
		<-started
	}
	pid := inst.Info()["pid"].(int)
	testutil.Must(t, syscall.Kill(pid, syscall.SIGKILL))
	killed := time.Now()
	select {
	case <-inst.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("Done not closed 2 s after SIGKILL")
	}
	t.Logf("Done %s after SIGKILL", time.Since(killed).Round(time.Millisecond))
	cl.Close() // the transport is gone: every stream ends
	for range n {
		if err := <-errs; err == nil || errdefs.CodeOf(errgrpc.FromGRPC(err)) == errdefs.OK {
			t.Errorf("exec survived the VM: %v", err)
		}
	}
	shared.cl = nil
	if _, err := inst.Dial(ctx); !errdefs.IsUnavailable(err) {
		t.Errorf("Dial after kill: %v, want Unavailable", err)
	}
	testutil.Must(t, inst.Stop(ctx))
	shared.inst = nil
	if _, err := os.Stat(filepath.Join(shared.spec.Dir, "disk.qcow2")); err != nil {
		t.Errorf("the box disk must survive a kill: %v", err)
	}
}

func TestVMGarbageKernel(t *testing.T) {
	requireVM(t)
	fixtures(t)
	k := filepath.Join(t.TempDir(), "vmlinuz")
	testutil.Must(t, os.WriteFile(k, []byte(strings.Repeat("not a kernel ", 4096)), 0o644))
	o := testOptions(shared.home, nil)
	o.Kernel, o.KernelModules = k, ""
	b, err := New(o)
	testutil.Must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	inst, err := b.Start(ctx, newSpec(t, "garbage"))
	if err == nil {
		inst.Kill()
		inst.Stop(ctx)
		t.Fatal("a garbage kernel started")
	}
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "qemu") {
		t.Fatalf("error %v: want Unavailable with QEMU's message", err)
	}
	t.Logf("failed in %s: %v", time.Since(start).Round(time.Millisecond), err)
}

// TestVMInitDies boots an init that exits at once: the kernel panics, QEMU
// exits (panic=-1, -no-reboot) and the error carries the console tail.
func TestVMInitDies(t *testing.T) {
	requireVM(t)
	fixtures(t)
	src := filepath.Join(t.TempDir(), "main.go")
	testutil.Must(t, os.WriteFile(src, []byte("package main\n\nimport \"os\"\n\nfunc main() { os.Exit(3) }\n"), 0o644))
	bad := filepath.Join(t.TempDir(), "init")
	cmd := exec.Command("go", "build", "-o", bad, src)
	cmd.Dir = filepath.Dir(src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building a failing init: %v\n%s", err, out)
	}
	b, err := New(testOptions(shared.home, nil))
	testutil.Must(t, err)
	spec := newSpec(t, "initdies")
	spec.AgentPath = bad
	_, _, err = bootBox(t, b, spec)
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "Attempted to kill init") {
		t.Fatalf("error %v: want Unavailable with the kernel panic from the console", err)
	}
	t.Logf("error: %v", err)
}

func TestAccelChoice(t *testing.T) {
	b, qemuBin, k := realBackend(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*DefaultBootTimeout)
	defer cancel()
	for _, tc := range []struct{ env, want string }{{"tcg", "pc-tcg"}, {"pc-tcg", "pc-tcg"}, {"microvm-kvm", "microvm-kvm"}} {
		b.opts.Accel = tc.env
		if got, _, err := b.accel(ctx, qemuBin, k, shared.agent); err != nil || got.Name != tc.want {
			t.Errorf("Accel %s: %q, %v", tc.env, got.Name, err)
		}
	}
	b.opts.Accel = "fast"
	if _, _, err := b.accel(ctx, qemuBin, k, shared.agent); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Accel fast: %v, want InvalidArgument", err)
	}
	// Unset: the ladder (real probe boots when /dev/kvm opens), then the
	// cached answer.
	b.opts.Accel = ""
	first, why, err := b.accel(ctx, qemuBin, k, shared.agent)
	if err != nil || first.Name == "" {
		t.Fatalf("ladder: %q, %v", first.Name, err)
	}
	t.Logf("rung %s (%s)", first.Name, why)
	start := time.Now()
	again, _, err := b.accel(ctx, qemuBin, k, shared.agent)
	if err != nil || again != first {
		t.Fatalf("second decision %q, %v; first %q", again.Name, err, first.Name)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second decision took %s: the answer was not cached", d)
	}
}

func TestBareBoot(t *testing.T) {
	requireVM(t)
	fixtures(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*DefaultBootTimeout)
	defer cancel()
	d, err := BareBoot(ctx, testOptions(shared.home, nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bare boot (%s): %s", testAccel, d.Round(time.Millisecond))
}
