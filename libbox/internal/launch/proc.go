package launch

import (
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Proc is a process the host started or found, named by a pidfd so that a
// signal never reaches another process that reused its pid. Waiting goes
// through the Go runtime's poller (no thread blocks in poll), and Close,
// from any goroutine, wakes a Wait in progress.
type Proc struct {
	Pid   int
	child bool // this process is its parent: Reap blocks until it is reaped
	f     *os.File
}

// NewProc takes pidfd, a pidfd of pid. child says this process is pid's
// parent.
func NewProc(pid, pidfd int, child bool) *Proc {
	_ = unix.SetNonblock(pidfd, true) // pollable: os.NewFile uses the poller
	return &Proc{Pid: pid, child: child, f: os.NewFile(uintptr(pidfd), "pidfd")}
}

// OpenProc opens a pidfd of pid (unix.ESRCH: it is gone).
func OpenProc(pid int, child bool) (*Proc, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, err
	}
	return NewProc(pid, fd, child), nil
}

// Signal sends sig; a process that is gone, or a closed p, is no error.
func (p *Proc) Signal(sig unix.Signal) error {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return nil
	}
	var serr error
	// Control holds the fd: a concurrent Close cannot free its number
	// for another file before the signal is sent.
	if err := rc.Control(func(fd uintptr) { serr = unix.PidfdSendSignal(int(fd), sig, nil, 0) }); err != nil {
		return nil
	}
	if errors.Is(serr, unix.ESRCH) {
		return nil
	}
	return serr
}

// Kill sends SIGKILL (see Signal).
func (p *Proc) Kill() error { return p.Signal(unix.SIGKILL) }

// Wait blocks until the process has exited (true), or p is closed or
// timeout passes (false); timeout < 0: no timeout, 0: it does not block.
func (p *Proc) Wait(timeout time.Duration) bool {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return false
	}
	exited := func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, _ := unix.Poll(fds, 0)
		return n > 0
	}
	if timeout == 0 {
		done := false
		_ = rc.Control(func(fd uintptr) { done = exited(fd) })
		return done
	}
	if timeout > 0 {
		if p.f.SetReadDeadline(time.Now().Add(timeout)) != nil {
			return false
		}
		defer p.f.SetReadDeadline(time.Time{})
	}
	return rc.Read(exited) == nil
}

// Reap collects the exit status of the process once it has exited: it
// blocks until then when it is this process's child; otherwise it takes
// the status only if the process happens to be a child that exited (one
// started detached by this process earlier), and returns false else.
func (p *Proc) Reap() (unix.WaitStatus, bool) {
	flags := 0
	if !p.child {
		flags = unix.WNOHANG
	}
	var ws unix.WaitStatus
	for {
		pid, err := unix.Wait4(p.Pid, &ws, flags, nil)
		if err == unix.EINTR {
			continue
		}
		return ws, err == nil && pid == p.Pid
	}
}

// Stop gives the process grace to exit, then kills it, waits for it,
// reaps it when it is this process's child, and closes p.
func (p *Proc) Stop(grace time.Duration) {
	if grace <= 0 || !p.Wait(grace) {
		_ = p.Kill()
		p.Wait(-1)
	}
	p.Reap()
	p.Close()
}

// Close releases the pidfd (a Wait in progress returns false); the
// process is left alone. Idempotent.
func (p *Proc) Close() error {
	_ = p.f.Close()
	return nil
}
