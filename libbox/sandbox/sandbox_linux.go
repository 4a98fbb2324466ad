// Package sandbox is the namespace sandbox backend: the box agent runs as
// PID 1 of new user, mount, pid, net, uts and ipc namespaces, pivoted into
// an overlay of the image (read-only lower dir) and the box's upper dir.
// The host reaches it over a unix socket in the box dir.
//
// The box's root is never the host's: on a root host it is the first id of
// the box's own slice of host ids (see libbox/internal/hostid), the image and volumes
// are id-mapped into it; on a normal user's host it is that user.
//
// It never mounts anything in the host's mount namespace: every mount
// lives in the sandbox's own namespace and disappears with it (the host
// attaches the id-mapped mounts from a thread that joined the sandbox's
// mount namespace and then exits).
package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/bootparam"
	"github.com/libbox/libbox/internal/forkserver"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/internal/cgroup"
	"github.com/libbox/libbox/libbox/internal/hostid"
	"github.com/libbox/libbox/libbox/internal/launch"
)

// DefaultCaps is the capability bounding set of processes in a sandbox
// (the set container runtimes grant by default).
var DefaultCaps = []int{
	unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FSETID, unix.CAP_FOWNER, unix.CAP_MKNOD,
	unix.CAP_NET_RAW, unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_SETFCAP, unix.CAP_SETPCAP,
	unix.CAP_NET_BIND_SERVICE, unix.CAP_SYS_CHROOT, unix.CAP_KILL, unix.CAP_AUDIT_WRITE,
}

// DefaultPidsLimit is how many processes and threads a sandbox box may
// have at once (a fork bomb stops there).
const DefaultPidsLimit = 4096

// describeLimits says, for every limit, what enforces it; the agent adds
// RLIMIT_NPROC for the box's uid when no pids group leaves it out.
func describeLimits(cg *cgroup.Group, l cgroup.Limits, rlimit bool) map[string]string {
	out := cg.Describe(l)
	if rlimit {
		out["pids"] += "; RLIMIT_NPROC per box uid"
	}
	return out
}

// Options configure the backend.
type Options struct {
	Home string
	Logf func(string, ...any)
}

// Backend implements backend.Backend.
type Backend struct {
	opts Options

	mu sync.Mutex
	// srv forks the box agents (see package forkserver) once it serves;
	// nil before that, after Close, or when it died. Guarded by mu.
	srv *launch.Server
	// srvPath is the agent binary srv runs. Guarded by mu.
	srvPath string
	// pending is a server still starting (its Go runtime coming up); the
	// boxes meanwhile are forked here. Guarded by mu.
	pending *launch.Server
	// starting: a goroutine is starting a server. Guarded by mu.
	starting bool
	// noServer: a server could not start; boxes are forked here. Guarded by mu.
	noServer bool
	// closed is set by Close: no new server. Guarded by mu.
	closed bool
	wg     sync.WaitGroup // startServer and old servers' Close
}

// Close stops the backend's fork server (the Runtime calls it once every
// box it started is stopped or released; a detached box keeps running).
// Idempotent.
func (b *Backend) Close() error {
	b.mu.Lock()
	srv, pending := b.srv, b.pending
	b.srv, b.closed = nil, true
	b.mu.Unlock()
	if pending != nil {
		pending.Client.Close() // its starter sees it gone and ends it
	}
	if srv != nil {
		srv.Close()
	}
	b.wg.Wait()
	return nil
}

// forkExec starts a box agent through the backend's fork server and
// reports whether this process is the agent's parent. The first box starts
// the server, from agentPath, in the background: until it serves (and
// when it cannot start or has died) boxes are forked from this process
// through launch, which is slower for a large host process (Go copies its
// page tables to fork into a new user namespace) but otherwise the same;
// so a process that starts one box never waits for the server.
func (b *Backend) forkExec(agentPath, argv0 string, argv []string, attr *syscall.ProcAttr) (*launch.Proc, error) {
	if srv := b.server(agentPath); srv != nil {
		pid, pidfd, err := srv.ForkExec(argv0, argv, attr)
		if err == nil {
			return launch.NewProc(pid, pidfd, false), nil
		}
		if !errors.Is(err, forkserver.ErrServerGone) {
			return nil, err
		}
		b.dropServer(srv)
		b.opts.logf("libbox: sandbox fork server: %v; forking here", err)
	}
	pidfd := -1
	attr.Sys.PidFD = &pidfd
	pid, err := launch.ForkExec(argv0, argv, attr)
	if err != nil {
		return nil, err
	}
	return launch.NewProc(pid, pidfd, true), nil
}

// server returns the fork server when it serves; otherwise it has one
// started and returns nil.
func (b *Backend) server(agentPath string) *launch.Server {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil && b.srvPath == agentPath {
		return b.srv
	}
	if b.closed || b.starting || b.noServer {
		return nil
	}
	if old := b.srv; old != nil { // a new agent binary; its boxes keep running
		b.srv = nil
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			old.Close()
		}()
	}
	b.starting = true
	b.wg.Add(1)
	go b.startServer(agentPath)
	return nil
}

// startServer starts a fork server and, once it serves, makes it the
// backend's.
func (b *Backend) startServer(agentPath string) {
	defer b.wg.Done()
	srv, err := launch.StartServer(agentPath)
	if err == nil {
		b.mu.Lock()
		b.pending = srv
		closed := b.closed
		b.mu.Unlock()
		if closed {
			srv.Client.Close()
		}
		if err = srv.WaitReady(); err != nil {
			srv.Close()
		}
	}
	b.mu.Lock()
	b.starting, b.pending = false, nil
	closed := b.closed
	if err == nil && !closed {
		b.srv, b.srvPath = srv, agentPath
	}
	if err != nil && !closed {
		b.noServer = true
	}
	b.mu.Unlock()
	switch {
	case err != nil && !closed:
		b.opts.logf("libbox: sandbox fork server %s: %v; forking here", agentPath, err)
	case err == nil && closed:
		srv.Close()
	}
}

func (b *Backend) dropServer(srv *launch.Server) {
	b.mu.Lock()
	if b.srv == srv {
		b.srv = nil
	}
	b.mu.Unlock()
	srv.Close()
}

func (o Options) logf(format string, args ...any) {
	if o.Logf != nil {
		o.Logf(format, args...)
	}
}

// New checks that this host can run sandboxes.
func New(opts Options) (*Backend, error) {
	if _, err := os.Stat("/proc/self/ns/pid"); err != nil {
		return nil, errdefs.New(errdefs.Unsupported, "namespace sandbox: this kernel has no pid namespaces")
	}
	if os.Geteuid() != 0 {
		b, err := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone")
		if err == nil && strings.TrimSpace(string(b)) == "0" {
			return nil, errdefs.New(errdefs.Unsupported, "namespace sandbox: unprivileged user namespaces are disabled (run as root or sysctl kernel.unprivileged_userns_clone=1)")
		}
	}
	return &Backend{opts: opts}, nil
}

// Name is "sandbox".
func (b *Backend) Name() string { return "sandbox" }

type state struct {
	backend.ProcState
	Socket   string   `json:"socket"`
	Cgroup   string   `json:"cgroup,omitempty"`    // cgroup v2 group
	CgroupV1 []string `json:"cgroup_v1,omitempty"` // cgroup v1 groups, one per controller
}

// Start launches the agent in new namespaces.
func (b *Backend) Start(ctx context.Context, spec backend.Spec) (backend.Instance, error) {
	if spec.ImageRoot == "" || spec.AgentPath == "" {
		return nil, errdefs.New(errdefs.InvalidArgument, "sandbox: image root and agent path are required")
	}
	sock := filepath.Join(spec.Dir, "agent.sock")
	_ = os.Remove(sock)
	// The mount point and the work dir must be empty and unused.
	for _, d := range []string{"rootfs", "work", "lower"} {
		_ = os.RemoveAll(filepath.Join(spec.Dir, d))
	}
	for _, pat := range []string{"volume.*", "layer.*"} {
		old, _ := filepath.Glob(filepath.Join(spec.Dir, pat))
		for _, d := range old {
			_ = os.RemoveAll(d)
		}
	}
	for _, d := range []string{"upper", "work", "rootfs", "lower"} {
		if err := os.MkdirAll(filepath.Join(spec.Dir, d), 0o755); err != nil {
			return nil, errdefs.Wrap(errdefs.Internal, err, "sandbox dir")
		}
	}
	vols := make([]bootparam.SandboxVolume, len(spec.Volumes))
	for i, v := range spec.Volumes {
		vols[i] = bootparam.SandboxVolume{Host: v.HostPath, Box: v.BoxPath, ReadOnly: v.ReadOnly}
	}
	// On a root host, paths are relative to the box dir the host hands the
	// agent (the dirs above it need not be reachable by the box's ids).
	sspec := bootparam.SandboxSpec{
		Lower: "lower", Upper: "upper", Work: "work", Rootfs: "rootfs", Hostname: spec.Hostname,
		Volumes: vols, Listen: "fd:3", UserNS: true, KeepCaps: DefaultCaps, BootSocket: 4,
		Protocol: bootparam.LaunchProtocol,
	}
	var mounts []hostMount
	ids := hostIDs{uid: uint32(os.Geteuid()), gid: uint32(os.Getegid()), size: 1, desc: "box uid 0 = your uid (no other ids)"}
	if os.Geteuid() == 0 {
		sl, desc, err := hostid.Alloc(spec.Dir)
		if err != nil {
			return nil, err
		}
		ids = hostIDs{uid: sl.UID, gid: sl.GID, size: hostid.SliceSize, desc: desc}
		// The box's root owns its layer; the box dir is only traversable.
		for _, d := range []string{"upper", "work", "rootfs", "lower"} {
			if err := os.Chown(filepath.Join(spec.Dir, d), int(ids.uid), int(ids.gid)); err != nil {
				return nil, errdefs.Wrap(errdefs.Internal, err, "sandbox dir")
			}
		}
		if err := os.Chmod(spec.Dir, 0o711); err != nil {
			return nil, errdefs.Wrap(errdefs.Internal, err, "sandbox dir")
		}
		mounts = []hostMount{{name: "lower", source: spec.ImageRoot, image: true, box: "image"}}
		for i, l := range spec.Layers {
			m := hostMount{name: fmt.Sprintf("layer.%d", i), source: layerFS(l), image: true, box: "snapshot layer"}
			if err := os.Mkdir(filepath.Join(spec.Dir, m.name), 0o700); err != nil {
				return nil, errdefs.Wrap(errdefs.Internal, err, "sandbox dir")
			}
			sspec.Layers = append(sspec.Layers, m.name)
			mounts = append(mounts, m)
		}
		for i, v := range spec.Volumes {
			m := hostMount{name: fmt.Sprintf("volume.%d", i), source: v.HostPath, box: "volume " + v.BoxPath}
			if err := stage(filepath.Join(spec.Dir, m.name), v.HostPath); err != nil {
				return nil, errdefs.Wrap(errdefs.Internal, err, "sandbox dir")
			}
			mounts = append(mounts, m)
		}
		for _, m := range mounts {
			sspec.HostMounts = append(sspec.HostMounts, m.name)
		}
	} else {
		sspec.Lower = spec.ImageRoot
		for _, l := range spec.Layers {
			sspec.Layers = append(sspec.Layers, layerFS(l))
		}
		for _, p := range []*string{&sspec.Upper, &sspec.Work, &sspec.Rootfs} {
			*p = filepath.Join(spec.Dir, *p)
		}
	}
	sspec.CloseFDs = []int{6} // the agent binary; the spec (fd 5) is closed once read
	nl, netSpec, err := newNetLink(spec.NetLink, ids.size > 1)
	if err != nil {
		return nil, err
	}
	defer nl.close()
	sspec.Net = netSpec
	// The agent's spawn thread joins the box's pids group: the agent's own
	// threads stay out of the box's count. Without one, the agent shares
	// its budget through RLIMIT_NPROC.
	lim := cgroup.Limits{CPUs: spec.CPUs, MemoryMiB: spec.MemoryMiB, Pids: DefaultPidsLimit, SpawnerPids: true}
	cg := cgroup.New(spec.ID, lim)
	defer cg.CloseFD()
	launched := false
	defer func() {
		if !launched {
			cg.Remove()
		}
	}()
	if cg.SpawnFD >= 0 {
		// The agent's next fd after 0-6 and netFD, if any (see attr).
		sspec.PidsGroupFD = netFD
		if nl.agentFile() != nil {
			sspec.PidsGroupFD++
		}
	} else {
		sspec.PidsLimit = DefaultPidsLimit
	}
	b2, _ := json.Marshal(&sspec)
	var files openFiles
	defer files.close()
	// The spec goes to the agent in memory, not through the box dir: a box
	// still starts when the libbox home's file system is full.
	specFile, err := files.memfd("sandbox-spec", b2)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "sandbox spec")
	}
	agentFile, err := files.open(spec.AgentPath, unix.O_RDONLY)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.FailedPrecondition, err, "sandbox agent %s", spec.AgentPath)
	}
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "boot socket")
	}
	files.fds = append(files.fds, sp[1])
	_ = unix.SetNonblock(sp[0], true) // the host's end polls: its reads have deadlines
	bootSock := os.NewFile(uintptr(sp[0]), "boot socket")
	defer bootSock.Close()

	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "agent socket")
	}
	ln.SetUnlinkOnClose(false)
	lnFile, err := ln.File()
	ln.Close()
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "agent socket")
	}
	defer lnFile.Close()
	if err := os.Chmod(sock, 0o600); err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "agent socket")
	}
	logf, err := os.OpenFile(filepath.Join(spec.Dir, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "agent log")
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "open /dev/null")
	}
	defer devnull.Close()

	sys := &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWNET | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
		Setsid:      true,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(ids.uid), Size: int(ids.size)}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(ids.gid), Size: int(ids.size)}},
		// setgroups stays allowed only when the host may map many gids.
		GidMappingsEnableSetgroups: ids.size > 1,
	}
	if ids.size > 1 {
		// Host root is not mapped in the box: become the box's root (host
		// uid ids.uid) before exec, or the agent would have no capabilities.
		sys.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	}
	if !spec.Detach {
		sys.Pdeathsig = syscall.SIGKILL
	}
	if cg.FD >= 0 {
		sys.UseCgroupFD = true
		sys.CgroupFD = cg.FD
	}
	attr := &syscall.ProcAttr{
		Dir:   "/",
		Env:   []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Files: []uintptr{devnull.Fd(), logf.Fd(), logf.Fd(), lnFile.Fd(), uintptr(sp[1]), uintptr(specFile), uintptr(agentFile)},
		Sys:   sys,
	}
	if f := nl.agentFile(); f != nil {
		attr.Files = append(attr.Files, f.Fd()) // netFD
	}
	if cg.SpawnFD >= 0 {
		attr.Files = append(attr.Files, uintptr(cg.SpawnFD)) // sspec.PidsGroupFD
	}
	proc, err := b.forkExec(spec.AgentPath, "/proc/self/fd/6", []string{"box-agent", "--sandbox", "fd:5"}, attr)
	cg.CloseFD()
	files.closeFD(sp[1]) // the boot socket reads EOF once the agent is gone
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Unavailable, err, "start sandbox agent %s", spec.AgentPath)
	}
	launched = true
	pid := proc.Pid
	// The agent forks nothing before its first request: joining the v1
	// groups now covers every process of the box.
	cg.Join(pid)
	mdesc, err := func() ([]string, error) {
		// The tap first: the agent configures it once it has its mounts.
		if err := nl.attach(ctx, pid); err != nil {
			return nil, err
		}
		desc, err := attachMounts(pid, sp[0], spec.Dir, mounts)
		if err != nil {
			return nil, err
		}
		// Only now: the agent's runtime came up while the host worked.
		hello, err := readHello(ctx, bootSock, helloTimeout)
		if err != nil {
			return nil, errdefs.Wrap(errdefs.CodeOf(err), err, "sandbox agent %s", spec.AgentPath)
		}
		return desc, checkHello(hello, spec.AgentPath)
	}()
	if err != nil {
		proc.Stop(0)
		cg.Remove()
		_ = os.Remove(sock)
		// An agent of another build may fail anywhere: say so first.
		if hello, _ := readHello(context.WithoutCancel(ctx), bootSock, time.Second); hello != nil {
			if herr := checkHello(hello, spec.AgentPath); herr != nil {
				err = herr
			}
		}
		return nil, err
	}
	st, _ := backend.ProcStartTime(pid)
	inst := &instance{
		st:   state{ProcState: backend.ProcState{Pid: pid, StartTime: st}, Socket: sock, Cgroup: cg.Path, CgroupV1: cg.V1Dirs()},
		proc: proc, done: make(chan struct{}), cg: cg,
		limits: describeLimits(cg, lim, sspec.PidsLimit > 0), ids: ids.desc, mounts: mdesc,
	}
	inst.watch()
	return inst, nil
}

// stage makes the empty dir or file a volume is attached on in the box dir.
func stage(p, host string) error {
	fi, err := os.Stat(host)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return os.Mkdir(p, 0o700)
	}
	return os.WriteFile(p, nil, 0o600)
}

// Attach follows a sandbox started by an earlier process.
func (b *Backend) Attach(ctx context.Context, spec backend.Spec, raw json.RawMessage) (backend.Instance, error) {
	var st state
	if len(raw) == 0 || json.Unmarshal(raw, &st) != nil {
		return nil, errdefs.New(errdefs.NotFound, "box %s has no running sandbox", spec.ID)
	}
	if !backend.ProcAlive(raw) {
		return nil, errdefs.New(errdefs.NotFound, "box %s: its sandbox is no longer running", spec.ID)
	}
	// Not started by this Runtime, but possibly by this process earlier
	// (detached, then released): its parent reaps it.
	proc, err := launch.OpenProc(st.Pid, false)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.NotFound, err, "box %s: its sandbox is no longer running", spec.ID)
	}
	inst := &instance{st: st, proc: proc, done: make(chan struct{}), cg: cgroup.Attach(st.Cgroup, st.CgroupV1)}
	inst.watch()
	return inst, nil
}

type instance struct {
	st     state
	proc   *launch.Proc // the agent; reaped here when this process started it
	cg     *cgroup.Group
	limits map[string]string // limit -> what enforces it
	ids    string            // the box's host id range
	mounts []string          // how the image and volumes are id-mapped

	done     chan struct{}
	mu       sync.Mutex
	released bool // guarded by mu
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// watch waits (in a goroutine it owns) for the agent to exit, then reaps it.
func (i *instance) watch() {
	i.wg.Add(1)
	go func() {
		defer i.wg.Done()
		defer close(i.done)
		i.proc.Wait(-1) // until it exits or Release closes it
		i.mu.Lock()
		released := i.released
		i.mu.Unlock()
		if released {
			return
		}
		i.proc.Reap()
		_ = os.Remove(i.st.Socket)
		i.cg.Remove()
		i.proc.Close()
	}()
}

func (i *instance) Dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", i.st.Socket)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Unavailable, err, "dial sandbox agent")
	}
	return c, nil
}

func (i *instance) Done() <-chan struct{} { return i.done }

func (i *instance) Kill() error {
	select {
	case <-i.done:
		return nil
	default:
	}
	return i.proc.Kill()
}

// Stop kills the agent at once: a sandbox agent keeps nothing worth a
// graceful exit once it answered Shutdown (it killed the box's processes
// then; their files are the host's upper dir, written through the host's
// page cache), and SIGKILL spares its server's drain and the Go exit.
func (i *instance) Stop(ctx context.Context) error {
	_ = i.Kill()
	select {
	case <-i.done:
	case <-ctx.Done():
		t := time.NewTimer(10 * time.Second)
		defer t.Stop()
		select {
		case <-i.done:
		case <-t.C:
			return errdefs.New(errdefs.Internal, "sandbox agent pid %d did not die after SIGKILL", i.st.Pid)
		}
	}
	i.wg.Wait()
	return nil
}

func (i *instance) Release() {
	i.mu.Lock()
	if i.released {
		i.mu.Unlock()
		return
	}
	i.released = true
	i.mu.Unlock()
	i.proc.Close() // wakes the watcher
	i.wg.Wait()
}

func (i *instance) State() json.RawMessage {
	b, _ := json.Marshal(&i.st)
	return b
}

// OOMKills is how many processes the OOM killer ended in the box's memory
// group (libbox reports an exec it ended as OOMKilled).
func (i *instance) OOMKills() (int, bool) { return i.cg.OOMKills() }

func (i *instance) Info() map[string]any {
	info := map[string]any{"pid": i.st.Pid, "socket": i.st.Socket, "limits": i.limits}
	if n, ok := i.cg.OOMKills(); ok {
		info["oom_kills"] = n
	}
	if i.ids != "" {
		info["user_namespace"] = i.ids
		info["id_mapped_mounts"] = i.mounts
	}
	return info
}
