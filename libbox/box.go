package libbox

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/errdefs/errgrpc"
	"github.com/libbox/libbox/guest/agentpb"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/image"
)

// Box is one box. Safe for concurrent use; one *Box per id per Runtime.
type Box struct {
	rt  *Runtime
	cfg boxConfig // fixed
	dir string

	// opMu serializes Start, Stop and remove.
	opMu sync.Mutex

	mu sync.Mutex
	// st mirrors state.json. Guarded by mu.
	st boxState
	// inst, conn and client are set while this Runtime runs the box. Guarded by mu.
	inst   backend.Instance
	conn   *grpc.ClientConn
	client agentpb.AgentClient
	// net is the box's network while this Runtime runs it (or follows it:
	// a detached box's helper). Guarded by mu.
	net boxNetwork
	// stopping is set while Stop shuts the box down on purpose. Guarded by mu.
	stopping bool
	// removed is set once the box's files are gone. Guarded by mu.
	removed bool
	// procs are the processes running through this Box. Guarded by mu.
	procs map[*Process]struct{}
	// noRun is the agent client whose agent predates the Run call (see
	// startExec). Guarded by mu.
	noRun agentpb.AgentClient

	// boot times the stages of the last start; lastCPU is the previous
	// Stats reading. Guarded by mu.
	boot    []BootStage
	lastCPU cpuSample

	// watchers waits for the goroutine that follows the running instance.
	watchers sync.WaitGroup
}

func newBox(r *Runtime, cfg boxConfig, st boxState) *Box {
	return &Box{rt: r, cfg: cfg, dir: r.boxDir(cfg.ID), st: st, procs: map[*Process]struct{}{}}
}

// ID is the box's unique id.
func (b *Box) ID() string { return b.cfg.ID }

// Name is the box's name ("" when it has none).
func (b *Box) Name() string { return b.cfg.Name }

// Info describes the box. A box recorded as running whose processes are
// gone is reported (and recorded) as stopped.
func (b *Box) Info() BoxInfo {
	b.mu.Lock()
	info := b.infoLocked()
	nw := b.net
	b.mu.Unlock()
	// Outside the lock: a detached box's network answers from its helper
	// process (bounded; marked unavailable when it does not answer).
	if nw != nil {
		ni := nw.Info()
		info.Network = &ni
	}
	return info
}

func (b *Box) infoLocked() BoxInfo {
	b.refreshLocked()
	info := BoxInfo{
		ID: b.cfg.ID, Name: b.cfg.Name, Image: b.cfg.Image, ImageID: b.cfg.ImageID,
		Isolation: b.cfg.Isolation, State: b.st.State, CreatedAt: b.cfg.CreatedAt,
		StartedAt: b.st.StartedAt, CPUs: b.cfg.CPUs, MemoryMiB: b.cfg.MemoryMiB,
		Env: b.cfg.Env, WorkingDir: b.cfg.WorkingDir, Volumes: b.cfg.Volumes,
		AutoRemove: b.cfg.AutoRemove, Detach: b.cfg.Detach, Dir: b.dir, Error: b.st.Error,
		Snapshot: b.st.Base,
	}
	if b.removed {
		info.State = "removed"
	}
	if b.inst != nil {
		info.Backend = b.inst.Info()
	} else if b.st.State == StateRunning && len(b.st.Instance) > 0 {
		// Running under another host process: what its backend recorded.
		_ = json.Unmarshal(b.st.Instance, &info.Backend)
	}
	return info
}

// refreshLocked turns a stale "running" (owner crashed) into "stopped".
func (b *Box) refreshLocked() {
	if b.st.State == StateRunning && b.inst == nil && !backend.ProcAlive(b.st.Instance) {
		b.st.State = StateStopped
		b.st.StoppedAt = time.Now().UTC()
		b.st.Instance = nil
		if b.st.Error == "" {
			b.st.Error = "the box's processes ended while no runtime was attached"
		}
		b.persistLocked()
	}
}

func (b *Box) persistLocked() {
	if b.removed {
		return
	}
	if _, err := os.Stat(filepath.Join(b.dir, "config.json")); err != nil {
		return // removed, possibly by another process sharing the home
	}
	if err := writeState(b.dir, &b.st); err != nil {
		b.rt.logf("libbox: box %s: write state: %v", b.cfg.ID, err)
	}
}

func (b *Box) spec(agentPath string, img *image.Image) backend.Spec {
	host := b.cfg.Name
	if host == "" {
		host = b.cfg.ID[:12]
	}
	return backend.Spec{
		ID: b.cfg.ID, Dir: b.dir, ImageRoot: img.Root, ImageID: img.ID, AgentPath: agentPath,
		CPUs: b.cfg.CPUs, MemoryMiB: b.cfg.MemoryMiB, Volumes: b.cfg.Volumes,
		Detach: b.cfg.Detach, Hostname: host,
		FromTemplate: b.cfg.Isolation == IsolationVM && !b.rt.opts.NoVMTemplates && !b.cfg.ColdBoot,
		ColdBoot:     b.cfg.ColdBoot,
	}
}

// prepare finds the backend, image and agent a start or attach needs.
func (b *Box) prepare(ctx context.Context) (backend.Backend, backend.Spec, error) {
	be, err := b.rt.backend(b.cfg.Isolation)
	if err != nil {
		return nil, backend.Spec{}, err
	}
	// The image the box was made from, even if its tag moved since.
	img, err := b.rt.images.Lookup(ctx, b.cfg.ImageID)
	if err != nil {
		img, err = b.rt.images.Get(ctx, b.cfg.Image, image.Options{Platform: b.cfg.Platform})
	}
	if err != nil {
		return nil, backend.Spec{}, err
	}
	agentPath, err := b.rt.agent()
	if err != nil {
		return nil, backend.Spec{}, err
	}
	spec := b.spec(agentPath, img)
	b.mu.Lock()
	base := b.st.Base
	b.mu.Unlock()
	if spec.Layers, err = b.rt.layerDirs(base); err != nil {
		return nil, backend.Spec{}, err
	}
	return be, spec, nil
}

// Start boots the box and returns once it serves execs. Starting a running
// box does nothing. ctx bounds the start only; cancelling it later does not
// stop the box.
func (b *Box) Start(ctx context.Context) error {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	if err := b.rt.checkOpen(); err != nil {
		return err
	}
	b.mu.Lock()
	if b.removed {
		b.mu.Unlock()
		return errdefs.New(errdefs.NotFound, "box %s was removed", b.cfg.ID)
	}
	if b.inst != nil {
		b.mu.Unlock()
		return nil
	}
	b.mu.Unlock()
	unlock, err := b.lockStart(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	b.mu.Lock()
	b.reloadStateLocked() // another process may have started it meanwhile
	b.refreshLocked()
	prevState := b.st
	b.mu.Unlock()

	t0 := time.Now()
	be, spec, err := b.prepare(ctx)
	if err != nil {
		return err
	}
	t1 := time.Now()
	var inst backend.Instance
	if prevState.State == StateRunning {
		// Detached box started by an earlier process: reattach.
		inst, err = be.Attach(ctx, spec, prevState.Instance)
		if err != nil && !errdefs.IsNotFound(err) {
			return err
		}
	}
	attached := inst != nil
	var nw boxNetwork
	if attached {
		nw = b.followNetwork()
	} else {
		if nw, err = b.startNetwork(ctx, &spec); err != nil {
			return err
		}
		inst, err = be.Start(ctx, spec)
		if err != nil {
			closeNetwork(nw)
			return err
		}
	}
	t2 := time.Now()
	cctx, ccancel := ctx, context.CancelFunc(func() {})
	if attached {
		// A running box answers at once unless another process holds its
		// agent connection (a VM's serial port takes one client).
		cctx, ccancel = context.WithTimeout(ctx, attachTimeout)
	}
	conn, client, err := b.connect(cctx, inst)
	ccancel()
	t3 := time.Now()
	if err == nil {
		if err = b.identify(ctx, inst, client, spec); err != nil {
			conn.Close()
		}
	}
	if err != nil && attached {
		// Never kill an instance this process did not start.
		if ctx.Err() == nil {
			err = errdefs.Wrap(errdefs.FailedPrecondition, err, "box %s runs, attached to another process (its agent does not answer this one): stop it there, or wait", b.cfg.ID)
		}
		return err
	}
	if err != nil {
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		_ = inst.Kill()
		_ = inst.Stop(kctx)
		cancel()
		closeNetwork(nw)
		return err
	}
	b.mu.Lock()
	b.inst, b.conn, b.client, b.net = inst, conn, client, nw
	b.stopping = false
	b.boot = []BootStage{{"prepare", t1.Sub(t0)}, {"launch", t2.Sub(t1)}, {"agent", t3.Sub(t2)}}
	if restored(inst) {
		b.boot = append(b.boot, BootStage{"identify", time.Since(t3)})
	}
	b.lastCPU = cpuSample{}
	if prevState.State != StateRunning || b.st.StartedAt.IsZero() {
		b.st.StartedAt = time.Now().UTC()
	}
	b.st.State = StateRunning
	b.st.Instance = inst.State()
	b.st.Error = ""
	b.persistLocked()
	b.mu.Unlock()
	b.watchers.Add(1)
	go b.watch(inst, conn)
	b.rt.warmLater(be, inst, spec)
	return nil
}

// connect dials the agent and waits until it answers Ping, under the boot
// deadline.
func (b *Box) connect(ctx context.Context, inst backend.Instance) (*grpc.ClientConn, agentpb.AgentClient, error) {
	conn, err := grpc.NewClient("passthrough:///agent", append(append(errgrpc.DialOptions(), agentpb.ClientOptions()...),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return inst.Dial(ctx) }),
		// A byte stream that went quiet (a guest that closed its port
		// without the host noticing) is found and redialled.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
	)...)
	if err != nil {
		return nil, nil, errdefs.Wrap(errdefs.Internal, err, "agent client")
	}
	client := agentpb.NewAgentClient(conn)
	timeout := b.rt.bootTimeout(b.cfg.Isolation)
	deadline := time.Now().Add(timeout)
	delay := 2 * time.Millisecond
	var lastErr error
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := client.Ping(pctx, &agentpb.PingRequest{}, grpc.WaitForReady(true))
		cancel()
		if err == nil {
			return conn, client, nil
		}
		lastErr = err
		select {
		case <-inst.Done():
			conn.Close()
			// The log says why; the failed dial only that nobody listened.
			if tail := b.logTail(); tail != "" {
				return nil, nil, errdefs.New(errdefs.Unavailable, "box %s exited while booting%s", b.cfg.ID, tail)
			}
			return nil, nil, errdefs.New(errdefs.Unavailable, "box %s exited while booting: %v", b.cfg.ID, lastErr)
		default:
		}
		if ctx.Err() != nil {
			conn.Close()
			return nil, nil, errdefs.Wrap(errdefs.CodeOf(ctx.Err()), ctx.Err(), "start box %s", b.cfg.ID)
		}
		if time.Now().After(deadline) {
			conn.Close()
			return nil, nil, errdefs.New(errdefs.DeadlineExceeded, "box %s did not answer within %s (set LIBBOX_BOOT_TIMEOUT to wait longer): %v%s", b.cfg.ID, timeout, lastErr, b.logTail())
		}
		time.Sleep(delay)
		if delay < 100*time.Millisecond {
			delay *= 2
		}
	}
}

// logTail returns the end of the box's console/agent log, for errors.
func (b *Box) logTail() string {
	for _, name := range []string{"console.log", "agent.log"} {
		data, err := os.ReadFile(filepath.Join(b.dir, name))
		if err != nil || len(data) == 0 {
			continue
		}
		if len(data) > 2048 {
			data = data[len(data)-2048:]
		}
		return "\n--- " + name + " (last lines) ---\n" + string(data)
	}
	return ""
}

// watch follows a running instance until it ends.
func (b *Box) watch(inst backend.Instance, conn *grpc.ClientConn) {
	defer b.watchers.Done()
	<-inst.Done()
	conn.Close() // fails in-flight execs with Unavailable at once
	b.mu.Lock()
	if b.inst != inst {
		b.mu.Unlock()
		return
	}
	released := b.st.State == StateRunning && b.stopping && b.cfg.Detach && b.rt.isClosed()
	if !released {
		// A released box keeps its network: a detached box's is in its
		// helper, which a later process follows.
		closeNetwork(b.net)
	}
	b.inst, b.conn, b.client, b.net = nil, nil, nil, nil
	if !released {
		if !b.stopping {
			b.st.Error = "the box exited unexpectedly"
		}
		b.st.State = StateStopped
		b.st.StoppedAt = time.Now().UTC()
		b.st.Instance = nil
		b.persistLocked()
	}
	autoRemove := b.cfg.AutoRemove && !b.stopping && !released
	b.mu.Unlock()
	if autoRemove {
		go func() {
			// Not under watchers: remove waits for them.
			_ = b.remove(context.Background(), false)
		}()
	}
}

func (r *Runtime) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// Stop shuts the box down: processes get SIGTERM, then SIGKILL; the box
// keeps its files. Stopping a stopped box does nothing.
func (b *Box) Stop(ctx context.Context) error {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	return b.stopLocked(ctx)
}

func (b *Box) stopLocked(ctx context.Context) error {
	b.mu.Lock()
	inst, client := b.inst, b.client
	if inst == nil {
		b.reloadStateLocked() // another process may have started it
		b.refreshLocked()
		running := b.st.State == StateRunning
		b.mu.Unlock()
		if running {
			// Running detached from another process: attach, then stop.
			if err := b.startAttachOnly(ctx); err != nil {
				return err
			}
			return b.stopLocked(ctx)
		}
		return nil
	}
	b.stopping = true
	b.mu.Unlock()

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	_, _ = client.Shutdown(sctx, &agentpb.ShutdownRequest{GraceMs: 2000, Exit: true})
	cancel()
	sctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	err := inst.Stop(sctx)
	cancel()
	b.watchers.Wait()
	b.mu.Lock()
	b.st.State = StateStopped
	b.st.StoppedAt = time.Now().UTC()
	b.st.Instance = nil
	b.st.Error = ""
	b.persistLocked()
	auto := b.cfg.AutoRemove
	b.mu.Unlock()
	if err != nil {
		return errdefs.Wrap(errdefs.CodeOf(err), err, "stop box %s", b.cfg.ID)
	}
	if auto {
		return b.removeLocked(ctx)
	}
	return nil
}

// startAttachOnly reattaches to a detached box without starting a new one.
func (b *Box) startAttachOnly(ctx context.Context) error {
	be, spec, err := b.prepare(ctx)
	if err != nil {
		return err
	}
	b.mu.Lock()
	prev := b.st.Instance
	b.mu.Unlock()
	inst, err := be.Attach(ctx, spec, prev)
	if err != nil {
		b.mu.Lock()
		b.st.State = StateStopped
		b.st.Instance = nil
		b.persistLocked()
		b.mu.Unlock()
		if errdefs.IsNotFound(err) {
			return nil
		}
		return err
	}
	conn, client, err := b.connect(ctx, inst)
	if err != nil {
		_ = inst.Kill()
		return err
	}
	nw := b.followNetwork() // asks its helper: not under b.mu
	b.mu.Lock()
	b.inst, b.conn, b.client, b.net = inst, conn, client, nw
	b.mu.Unlock()
	b.watchers.Add(1)
	go b.watch(inst, conn)
	return nil
}

func (b *Box) remove(ctx context.Context, force bool) error {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.mu.Lock()
	if b.removed {
		b.mu.Unlock()
		return errdefs.New(errdefs.NotFound, "box %s was already removed", b.cfg.ID)
	}
	b.refreshLocked()
	running := b.inst != nil || b.st.State == StateRunning
	b.mu.Unlock()
	if running {
		if !force {
			return errdefs.New(errdefs.FailedPrecondition, "box %s is running: stop it first or remove with force", b.cfg.ID)
		}
		if err := b.stopLocked(ctx); err != nil {
			return err
		}
		b.mu.Lock()
		removed := b.removed
		b.mu.Unlock()
		if removed { // auto-remove did it
			return nil
		}
	}
	return b.removeLocked(ctx)
}

func (b *Box) removeLocked(ctx context.Context) error {
	unlock, err := b.rt.storeLock()
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.removed = true
	b.mu.Unlock()
	// config.json first: a box without config does not exist (its name is
	// free, no snapshot depends on it). The rest of its dir, named by an
	// id never used again, goes after the store lock.
	_ = os.Remove(filepath.Join(b.dir, "config.json"))
	b.rt.forget(b.cfg.ID)
	b.rt.collectHidden() // the hidden snapshot a clone sat on
	unlock()
	if err := removeBoxDir(b.dir); err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "remove box %s", b.cfg.ID)
	}
	return nil
}

// closeForRuntime is Runtime.Close's part for one box: stop it unless it
// is detached, release it otherwise.
func (b *Box) closeForRuntime() error {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.mu.Lock()
	inst := b.inst
	detach := b.cfg.Detach
	b.mu.Unlock()
	if inst == nil {
		b.watchers.Wait()
		return nil
	}
	if detach {
		b.mu.Lock()
		b.stopping = true
		b.mu.Unlock()
		inst.Release()
		b.watchers.Wait()
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return b.stopLocked(ctx)
}

// agentClient returns the client of the running box.
func (b *Box) agentClient() (agentpb.AgentClient, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.removed {
		return nil, errdefs.New(errdefs.NotFound, "box %s was removed", b.cfg.ID)
	}
	if b.client == nil {
		return nil, errdefs.New(errdefs.FailedPrecondition, "box %s is not running: Start it first", b.cfg.ID)
	}
	return b.client, nil
}

// Running reports whether this Runtime is connected to the box's agent.
func (b *Box) Running() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.client != nil
}
