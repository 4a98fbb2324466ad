// Package agent is the box agent's gRPC service: a thin adapter over the
// spawner (processes), the box root (files) and the agent's own lifecycle.
//
// Handlers never fork and never change process-global state: every spawn
// is handed to the spawner; every path is resolved inside the box root.
// Errors convert to gRPC status at this boundary only (errgrpc interceptors).
package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/errdefs/errgrpc"
	"github.com/libbox/libbox/guest/agentpb"
	"github.com/libbox/libbox/guest/bootparam"
	"github.com/libbox/libbox/guest/spawner"
)

// ProtocolVersion is the version Info reports: the launch protocol, which
// covers the agent protocol (bumped on its incompatible changes too).
const ProtocolVersion = bootparam.LaunchProtocol

// Features lists what this agent supports (InfoResponse.features).
var Features = []string{"exec", "tty", "stdin", "signal", "resize", "timeout", "control", "upload", "download", "mount", "shutdown",
	"fs", "watch", "stats", "processes"}

// Options configure an Agent.
type Options struct {
	Root     string // directory spawned processes see as "/"; "" or "/" for none
	PID1     bool   // the agent is PID 1 (powers off on Shutdown)
	Hostname string
	Version  string
	Logf     func(format string, args ...any)
	// SpawnSetup runs once on the spawn thread before any spawn; what it
	// sets per thread (no_new_privs, capability bounding set) every child
	// inherits.
	SpawnSetup func() error
	// SpawnGate, when not nil, holds the first spawn until it yields (see
	// spawner.NewGated): boot work that may finish while the agent serves.
	SpawnGate <-chan error
	// SyncOnShutdown flushes filesystems on Shutdown (VMs: the guest's
	// page cache holds the box's writes).
	SyncOnShutdown bool
	// OwnKernel: the agent is PID 1 of its own kernel (a VM), so Identify
	// may set the wall clock, the hostname and the kernel's random pool.
	OwnKernel bool
	// BootTimes are when the boot stages before the agent ended ("main",
	// "boot"); the agent adds "runtime" and "serving" (Info reports them).
	BootTimes map[string]time.Time
}

// Agent implements agentpb.AgentServer.
type Agent struct {
	agentpb.UnimplementedAgentServer

	opts  Options
	root  string // "/" or an absolute directory
	sp    *spawner.Spawner
	froot *os.Root

	startedAt   time.Time
	execsServed atomic.Uint64 // Exec calls that spawned a process

	// wg tracks goroutines that may outlive a handler (stream readers).
	wg sync.WaitGroup
	// trim returns free memory once no process runs (see idleTrim).
	trim *trimmer

	// execs names running execs for Signal, Resize and CloseStdin.
	execs execTable
	// devNull is /dev/null, read-only: the stdin of every process started
	// without one (a child gets its own copy as fd 0).
	devNull int
	// stopAt is when Shutdown began (unix nanoseconds), 0 before.
	stopAt atomic.Int64

	shutdownOnce sync.Once
	shutdown     chan struct{} // closed when a Shutdown asked the agent to exit

	// ident is what Identify set (hostname, box id).
	ident identity

	// boot is Options.BootTimes plus the agent's own stages, in unix ns.
	// Written before the server serves, read-only after.
	boot map[string]int64
}

// New creates an agent and starts its spawner. Close releases it.
func New(opts Options) (*Agent, error) {
	root := opts.Root
	if root == "" {
		root = "/"
	}
	froot, err := os.OpenRoot(root)
	if err != nil {
		return nil, fmt.Errorf("agent: open root %s: %w", root, err)
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	devNull, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		froot.Close()
		return nil, fmt.Errorf("agent: open %s: %w", os.DevNull, err)
	}
	sp, err := spawner.NewGated(opts.SpawnSetup, opts.SpawnGate)
	if err != nil {
		unix.Close(devNull)
		froot.Close()
		return nil, fmt.Errorf("agent: spawn thread setup: %w", err)
	}
	boot := make(map[string]int64, len(opts.BootTimes)+2)
	for k, t := range opts.BootTimes {
		boot[k] = t.UnixNano()
	}
	boot["runtime"] = time.Now().UnixNano()
	return &Agent{
		opts:      opts,
		root:      root,
		sp:        sp,
		froot:     froot,
		devNull:   devNull,
		startedAt: time.Now(),
		shutdown:  make(chan struct{}),
		boot:      boot,
		trim:      &trimmer{running: sp.Running},
	}, nil
}

// ShutdownRequested is closed when a client asked the agent to exit.
func (a *Agent) ShutdownRequested() <-chan struct{} { return a.shutdown }

// Running is the number of processes started by Exec still running.
func (a *Agent) Running() int { return a.sp.Running() }

// Close kills every process it started, stops the spawner and waits for
// every goroutine it owns. Call it after the gRPC server stopped.
func (a *Agent) Close() {
	a.killAll(0)
	a.wg.Wait()
	a.trim.stop()
	a.sp.Close()
	unix.Close(a.devNull)
	a.froot.Close()
}

// Serve runs a gRPC server for the agent on ln until ctx is done or a client
// asks for Shutdown, then stops the server and releases the agent.
func Serve(ctx context.Context, ln net.Listener, opts Options) error {
	// Tunings: without them the agent is only slower.
	_ = SetTimerSlack(TimerSlack)
	_ = SetMonitorSlack(MonitorSlack)
	a, err := New(opts)
	if err != nil {
		return err
	}
	srv := NewServer(a)
	a.boot["serving"] = time.Now().UnixNano()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case <-a.ShutdownRequested():
	case err = <-errc:
	}
	stopServer(srv, 2*time.Second)
	if err == nil {
		<-errc
	}
	a.Close()
	if err == grpc.ErrServerStopped {
		err = nil
	}
	return err
}

// NewServer returns a gRPC server with the agent registered.
func NewServer(a *Agent) *grpc.Server {
	srv := grpc.NewServer(append(errgrpc.ServerOptions(),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(16<<20),
		// Fixed receive windows (no BDP growth to 16 MiB): stdin a process
		// does not read may queue at most this much on the connection ahead
		// of a control call (Signal, Resize, CloseStdin) sent after it.
		grpc.InitialWindowSize(256<<10),
		grpc.InitialConnWindowSize(1<<20),
		grpc.NumStreamWorkers(uint32(runtime.NumCPU())),
	)...)
	agentpb.RegisterAgentServer(srv, a)
	return srv
}

func stopServer(srv *grpc.Server, grace time.Duration) {
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		srv.Stop()
		<-done
	}
}

func (a *Agent) Ping(ctx context.Context, _ *agentpb.PingRequest) (*agentpb.PingResponse, error) {
	return &agentpb.PingResponse{UnixNanos: time.Now().UnixNano()}, nil
}

func (a *Agent) Info(ctx context.Context, _ *agentpb.InfoRequest) (*agentpb.InfoResponse, error) {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	var si unix.Sysinfo_t
	_ = unix.Sysinfo(&si)
	return &agentpb.InfoResponse{
		AgentVersion:    a.opts.Version,
		ProtocolVersion: ProtocolVersion,
		Features:        Features,
		Pid1:            a.opts.PID1,
		Kernel:          unix.ByteSliceToString(uts.Release[:]),
		Root:            a.root,
		Cpus:            uint32(runtime.NumCPU()),
		MemTotalKb:      uint64(si.Totalram) * uint64(si.Unit) / 1024,
		Pid:             int32(os.Getpid()),
		Running:         int32(a.sp.Running()),
		BootUnixNanos:   a.boot,
		BoxId:           a.ident.boxID(),
	}, nil
}

func (a *Agent) Shutdown(ctx context.Context, req *agentpb.ShutdownRequest) (*agentpb.ShutdownResponse, error) {
	a.stopAt.CompareAndSwap(0, time.Now().UnixNano())
	grace := time.Duration(req.GetGraceMs()) * time.Millisecond
	if grace <= 0 {
		grace = 2 * time.Second
	}
	a.killAll(grace)
	if a.opts.SyncOnShutdown {
		unix.Sync()
	}
	if req.GetExit() {
		a.shutdownOnce.Do(func() { close(a.shutdown) })
	}
	return &agentpb.ShutdownResponse{}, nil
}

// stoppingSince is when Shutdown began (unix nanoseconds), or 0.
func (a *Agent) stoppingSince() int64 { return a.stopAt.Load() }

// killAll sends SIGTERM to every process group it started, waits up to
// grace for them to exit, then SIGKILLs what is left. As PID 1 it also
// kills every other process of the box.
func (a *Agent) killAll(grace time.Duration) {
	sig := syscall.SIGTERM
	if grace <= 0 {
		sig = syscall.SIGKILL
	}
	for _, pid := range a.sp.Pids() {
		_ = spawner.KillGroup(pid, sig)
	}
	if a.opts.PID1 {
		_ = unix.Kill(-1, sig)
	}
	deadline := time.Now().Add(grace)
	for a.sp.Running() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	for _, pid := range a.sp.Pids() {
		_ = spawner.KillGroup(pid, syscall.SIGKILL)
		_ = unix.Kill(pid, syscall.SIGKILL)
	}
	if a.opts.PID1 {
		_ = unix.Kill(-1, syscall.SIGKILL)
	}
}

func (a *Agent) Mount(ctx context.Context, req *agentpb.MountRequest) (*agentpb.MountResponse, error) {
	rel, err := boxRel(req.GetTarget())
	if err != nil {
		return nil, err
	}
	if err := a.froot.MkdirAll(rel, 0o755); err != nil {
		return nil, errdefs.Wrap(errdefs.InvalidArgument, err, "mount target %s", req.GetTarget())
	}
	target := a.hostPath(rel)
	var flags uintptr
	if req.GetReadOnly() {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount(req.GetSource(), target, req.GetFstype(), flags, req.GetOptions()); err != nil {
		return nil, errdefs.Wrap(errdefs.InvalidArgument, err, "mount %s on %s", req.GetSource(), req.GetTarget())
	}
	return &agentpb.MountResponse{}, nil
}

// hostPath turns a root-relative path into the agent's view of it.
func (a *Agent) hostPath(rel string) string {
	if a.root == "/" {
		return "/" + rel
	}
	return a.root + "/" + rel
}
