//go:build linux

package qemu

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
)

// proc is a host process the backend started (QEMU, virtiofsd) or found
// again (Attach). A watcher goroutine closes done once it has exited (and
// reaps it when it is our child), or once the proc is released.
type proc struct {
	pid       int
	startTime uint64
	child     bool
	done      chan struct{}

	releaseOnce sync.Once
	wake        *os.File // closing it stops the watcher (release)

	mu sync.Mutex
	// exit describes how it ended; guarded by mu, set before done closes.
	exit string
}

// watch starts watching pid through a pidfd.
func watch(pid int, startTime uint64, child bool) (*proc, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, errdefs.New(errdefs.NotFound, "process %d of the box is gone", pid)
		}
		return nil, errdefs.Wrap(errdefs.Internal, err, "pidfd_open %d", pid)
	}
	r, w, err := os.Pipe()
	if err != nil {
		unix.Close(fd)
		return nil, errdefs.Wrap(errdefs.Internal, err, "pipe")
	}
	p := &proc{pid: pid, startTime: startTime, child: child, done: make(chan struct{}), wake: w}
	go p.watch(fd, r)
	return p, nil
}

func (p *proc) watch(pidfd int, wake *os.File) {
	wfd := int32(wake.Fd())
	for {
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}, {Fd: wfd, Events: unix.POLLIN}}
		_, err := unix.Poll(fds, -1)
		if err != nil && errors.Is(err, unix.EINTR) {
			continue
		}
		if err == nil && fds[0].Revents == 0 && fds[1].Revents != 0 {
			unix.Close(pidfd)
			wake.Close()
			p.finish("released")
			return
		}
		break
	}
	exit := "exited"
	// Reap it when it is our child. A process found by Attach may be our
	// child too (started detached by this process, then released).
	var ws unix.WaitStatus
	flags := unix.WNOHANG
	if p.child {
		flags = 0
	}
	for {
		pid, err := unix.Wait4(p.pid, &ws, flags, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err == nil && pid == p.pid {
			switch {
			case ws.Exited():
				exit = fmt.Sprintf("exited with status %d", ws.ExitStatus())
			case ws.Signaled():
				exit = "killed by signal " + ws.Signal().String()
			}
		}
		break
	}
	unix.Close(pidfd)
	wake.Close()
	p.finish(exit)
}

func (p *proc) finish(exit string) {
	p.releaseOnce.Do(func() { p.wake.Close() })
	p.mu.Lock()
	p.exit = exit
	p.mu.Unlock()
	close(p.done)
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

// kill sends SIGKILL unless the process is gone (or its pid was reused).
func (p *proc) kill() {
	if p.exited() {
		return
	}
	if st, err := backend.ProcStartTime(p.pid); err != nil || st != p.startTime {
		return
	}
	_ = syscall.Kill(p.pid, syscall.SIGKILL)
}

// release stops watching; done closes, the process is left alone.
func (p *proc) release() {
	p.releaseOnce.Do(func() { p.wake.Close() })
	<-p.done
}

// The spawn thread: child processes that must die with the host process
// get Pdeathsig, which fires when the *thread* that forked them exits. So
// they are forked from one goroutine locked to an OS thread that never
// exits (spawnLoop).
var (
	spawnOnce sync.Once
	spawnReq  chan func()
)

func spawnLoop() {
	runtime.LockOSThread() // never unlocked: the thread lives as long as the process
	for f := range spawnReq {
		f()
	}
}

// onSpawnThread runs f on the spawn thread and waits for it.
func onSpawnThread(f func()) {
	spawnOnce.Do(func() {
		spawnReq = make(chan func())
		go spawnLoop()
	})
	done := make(chan struct{})
	spawnReq <- func() { defer close(done); f() }
	<-done
}

func deathSig() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// launch starts a long-running helper process (QEMU, virtiofsd) with its
// stdout and stderr going to logPath and extra as its fds 3, 4, ... Unless
// detach, it dies with the host process; detached, it gets its own session.
func launch(bin string, args []string, logPath string, detach bool, extra ...*os.File) (*proc, error) {
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
	onSpawnThread(func() { err = cmd.Start() })
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
