//go:build linux

package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/internal/vmboot"
)

// Bounds of the stop escalation.
const (
	stopGrace   = 10 * time.Second // longest wait for the guest's own power-off
	qmpTimeout  = 3 * time.Second  // QMP quit, and the wait after it
	killTimeout = 5 * time.Second  // wait after SIGKILL
	startWait   = 30 * time.Second // QEMU's own start (sockets, QMP), not the boot
)

// instance is one running VM.
type instance struct {
	spec    backend.Spec
	p       *proc
	files   boxFiles
	accel   string
	machine string
	rung    string // the accelerator ladder's rung, and why not a higher one
	rungWhy string
	cpus    int
	mem     int
	kernel  vmboot.Kernel
	helpers []helper // virtiofsd processes
	args    []string // QEMU's arguments (a template records them)
	// template is the key of the template the VM was restored from ("":
	// it booted).
	template string
	// resumed is the memory snapshot (its directory) the VM resumed ("":
	// none).
	resumed string
	// stages time the steps of Start, in order.
	stages  []startLap
	jail    *jail       // what confines QEMU; nil: nothing known (attached from an older state)
	greeted atomic.Bool // an agent answered a handshake: the VM is up
	// bootTimeout bounds the first handshake (the boot); set before use.
	bootTimeout time.Duration

	stopMu sync.Mutex // serialises Stop
	// stopErr is the result of the first completed Stop; guarded by stopMu.
	stopErr  error
	stopped  bool // guarded by stopMu
	released sync.Once
}

var _ backend.Instance = (*instance)(nil)

func newInstance(spec backend.Spec, p *proc, f boxFiles, accel, machine string, cpus, mem int, k vmboot.Kernel) *instance {
	return &instance{spec: spec, p: p, files: f, accel: accel, machine: machine, cpus: cpus, mem: mem, kernel: k}
}

// waitStarted returns once QEMU has created its sockets and answers QMP
// (so the kernel was loaded and the machine runs), or fails with QEMU's
// stderr when it exits first.
func (i *instance) waitStarted(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startWait)
	defer cancel()
	for {
		if i.p.exited() {
			return i.unavailable()
		}
		_, e1 := os.Stat(i.files.agentSock)
		_, e2 := os.Stat(i.files.qmpSock)
		if e1 == nil && e2 == nil {
			break
		}
		if err := vmboot.SleepCtx(ctx, 5*time.Millisecond); err != nil {
			return errdefs.Wrap(errdefs.CodeOf(err), err, "qemu did not create its sockets in %s", i.spec.Dir)
		}
	}
	for {
		_, err := qmp(ctx, i.files.qmpSock, "query-status")
		if err == nil {
			return nil
		}
		if i.p.exited() {
			return i.unavailable()
		}
		if err := vmboot.SleepCtx(ctx, 10*time.Millisecond); err != nil {
			return errdefs.Wrap(errdefs.CodeOf(err), err, "qemu did not answer QMP")
		}
	}
}

func (i *instance) Done() <-chan struct{} { return i.p.done }

// Stop waits (bounded by ctx and stopGrace) for the VM to power off, then
// asks QEMU to quit over QMP, then SIGKILLs it; each step is bounded.
func (i *instance) Stop(ctx context.Context) error {
	i.stopMu.Lock()
	defer i.stopMu.Unlock()
	if i.stopped {
		return i.stopErr
	}
	if i.p.exitString() == "released" {
		return errdefs.New(errdefs.FailedPrecondition, "vm %s was released by this handle: attach again to stop it", i.spec.ID)
	}
	grace, cancel := context.WithTimeout(ctx, stopGrace)
	select {
	case <-i.p.done:
	case <-grace.Done():
	}
	cancel()
	if !i.p.exited() {
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), qmpTimeout)
		_, _ = qmp(qctx, i.files.qmpSock, "quit")
		select {
		case <-i.p.done:
		case <-qctx.Done():
		}
		cancel()
	}
	if !i.p.exited() {
		i.p.kill()
		t := time.NewTimer(killTimeout)
		select {
		case <-i.p.done:
		case <-t.C:
		}
		t.Stop()
	}
	if !i.p.exited() {
		i.stopErr = errdefs.New(errdefs.Internal, "qemu pid %d of box %s did not exit after SIGKILL", i.p.pid, i.spec.ID)
		return i.stopErr
	}
	i.release()
	i.stopped = true
	return nil
}

// release stops the helpers and removes the sockets (the disk stays).
func (i *instance) release() {
	i.released.Do(func() {
		stopHelpers(i.helpers)
		i.jail.release()
		for _, p := range []string{i.files.agentSock, i.files.qmpSock, i.files.pidFile} {
			_ = os.Remove(p)
		}
	})
}

// Release stops tracking a VM that keeps running (detached): the watchers
// end and Done closes; QEMU and its helpers are left alone.
func (i *instance) Release() {
	i.p.release()
	for _, h := range i.helpers {
		h.release()
	}
}

// Kill ends the VM at once.
func (i *instance) Kill() error {
	i.p.kill()
	for _, h := range i.helpers {
		h.kill()
	}
	return nil
}

func (i *instance) State() json.RawMessage {
	st := state{
		PID: i.p.pid, StartTime: i.p.startTime,
		AgentSocket: i.files.agentSock, QMPSocket: i.files.qmpSock,
		Accel: i.accel, Machine: i.machine, CPUs: i.cpus, MemoryMiB: i.mem,
		Kernel: i.kernel.Image, Helpers: i.helpers, Rung: i.rung, RungWhy: i.rungWhy, Jail: i.jail,
	}
	if i.jail != nil && i.jail.QEMUPID > 0 {
		st.PID, st.StartTime = i.jail.QEMUPID, i.jail.qemuStart
	}
	raw, _ := json.Marshal(st)
	return raw
}

func (i *instance) Info() map[string]any {
	info := map[string]any{
		"accel":      i.accel,
		"machine":    i.machine,
		"pid":        i.pid(),
		"cpus":       i.cpus,
		"memory_mib": i.mem,
		"kernel":     i.kernel.Image,
		"console":    i.files.console,
		"rung":       i.rung,
		"rung_why":   i.rungWhy,
		"template":   i.template,
		"resumed":    i.resumed,
		"start_us":   i.startUS(),
		"jail":       i.jail.info(),
	}
	if len(i.helpers) > 0 {
		info["volumes"] = volumesInfo(i.helpers)
	}
	return info
}

// pid is QEMU's pid (under a root host's pid namespace init, not the
// launched process's).
func (i *instance) pid() int {
	if i.jail != nil && i.jail.QEMUPID > 0 {
		return i.jail.QEMUPID
	}
	return i.p.pid
}

// qmp runs one QMP command without arguments (see qmpExec).
func qmp(ctx context.Context, sock, command string) (json.RawMessage, error) {
	return qmpExec(ctx, sock, command, nil)
}

// qmpExec runs one QMP command (with arguments unless nil) on a fresh
// connection and returns its "return" value. QMP serves one client at a
// time; connections are short.
func qmpExec(ctx context.Context, sock, command string, arguments any) (json.RawMessage, error) {
	return qmpRun(ctx, sock, nil, command, arguments)
}

// qmpFD is the name under which qmpRun hands QEMU a file ("fd:" URIs).
const qmpFD = "libbox"

// qmpRun runs one QMP command like qmpExec; with f, it first hands QEMU f
// (getfd, over the same connection) under the name qmpFD, so the command
// can use it: QEMU then needs no path and no exec (its jail allows
// neither).
func qmpRun(ctx context.Context, sock string, f *os.File, command string, arguments any) (json.RawMessage, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, qmpTimeout)
		defer cancel()
	}
	q, err := dialQMP(ctx, sock)
	if err != nil {
		return nil, err
	}
	defer q.close()
	if f != nil {
		if err := q.sendFD(f); err != nil {
			return nil, err
		}
	}
	ret, err := q.call(command, arguments)
	var qe *qmpError
	if err != nil && command == "quit" && !errors.As(err, &qe) {
		return nil, nil // QEMU may close before answering
	}
	return ret, err
}

// startTimer times the steps of a start.
type startTimer struct {
	t    time.Time
	laps []startLap
}

type startLap struct {
	name string
	d    time.Duration
}

func (s *startTimer) lap(name string) {
	now := time.Now()
	s.laps = append(s.laps, startLap{name, now.Sub(s.t)})
	s.t = now
}

// startUS is how long each step of Start took, in microseconds, by name.
func (i *instance) startUS() map[string]int64 {
	out := make(map[string]int64, len(i.stages))
	for _, l := range i.stages {
		out[l.name] = l.d.Microseconds()
	}
	return out
}
