//go:build linux

package qemu

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/internal/launch"
)

// proc is a host process the backend started (QEMU, virtiofsd) or found
// again (Attach). A watcher goroutine closes done once it has exited (and
// reaps it when it is our child), or once the proc is released.
type proc struct {
	pid       int
	startTime uint64
	done      chan struct{}
	p         *launch.Proc

	mu sync.Mutex
	// exit describes how it ended; guarded by mu, set before done closes.
	exit string
}

// watch starts watching pid through a pidfd.
func watch(pid int, startTime uint64, child bool) (*proc, error) {
	lp, err := launch.OpenProc(pid, child)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, errdefs.New(errdefs.NotFound, "process %d of the box is gone", pid)
		}
		return nil, errdefs.Wrap(errdefs.Internal, err, "pidfd_open %d", pid)
	}
	p := &proc{pid: pid, startTime: startTime, done: make(chan struct{}), p: lp}
	go p.watch()
	return p, nil
}

func (p *proc) watch() {
	defer close(p.done)
	exit := "released"
	if p.p.Wait(-1) {
		// Reap it when it is our child. A process found by Attach may be
		// our child too (started detached by this process, then released).
		exit = "exited"
		if ws, ok := p.p.Reap(); ok {
			switch {
			case ws.Exited():
				exit = fmt.Sprintf("exited with status %d", ws.ExitStatus())
			case ws.Signaled():
				exit = "killed by signal " + ws.Signal().String()
			}
		}
	}
	p.p.Close()
	p.mu.Lock()
	p.exit = exit
	p.mu.Unlock()
}

func (p *proc) exitString() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exit == "" {
		return "running"
	}
	return p.exit
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL unless the process is gone.
func (p *proc) kill() { _ = p.p.Kill() }

// release stops watching; done closes, the process is left alone.
func (p *proc) release() {
	p.p.Close()
	<-p.done
}

func deathSig() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// spawn starts a long-running helper process (QEMU, virtiofsd) with its
// stdout and stderr going to logPath and extra as its fds 3, 4, ... Unless
// detach, it dies with the host process; detached, it gets its own session.
func spawn(bin string, args []string, logPath string, detach bool, extra ...*os.File) (*proc, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "qemu log")
	}
	defer log.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.ExtraFiles = extra
	if detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = deathSig()
	}
	// Pdeathsig fires when the thread that forked exits: fork from the
	// launcher thread, which never does.
	launch.Do(func() { err = cmd.Start() })
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "starting %s", bin)
	}
	pid := cmd.Process.Pid
	st, _ := backend.ProcStartTime(pid)
	p, err := watch(pid, st, true)
	cmd.Process.Release() // reaped by the watcher
	if err != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		return nil, err
	}
	return p, nil
}

// findProc finds a running process started by an earlier host process,
// checking its start time so a reused pid is not mistaken for it.
func findProc(pid int, startTime uint64) (*proc, error) {
	st, err := backend.ProcStartTime(pid)
	if err != nil || (startTime != 0 && st != startTime) {
		return nil, errdefs.New(errdefs.NotFound, "process %d of the box is gone", pid)
	}
	return watch(pid, st, false)
}
