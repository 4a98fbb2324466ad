// Package launch starts host helper processes (sandbox agents, QEMU) from
// one goroutine locked to its own OS thread that never exits, and follows
// them through pidfds (Proc).
//
// Pdeathsig is tied to the thread that forked the child, not the process:
// forking from a caller's thread (a Python or Node thread that calls into
// libbox and may exit later) would kill the child with that thread. This
// package must never be used for short-lived commands whose exit status is
// needed through os/exec's Wait on the same thread.
//
// Forks from here copy this process's page tables whenever Go cannot take
// its vfork path (CLONE_NEWUSER): for many boxes, start a fork server
// (StartServer) once from here and fork the boxes from it.
package launch

import (
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/internal/forkserver"
)

var (
	once sync.Once
	jobs chan func()
)

// startSlack is the timer slack of the thread this package was initialized
// on: the program's main thread, or in libbox.so the runtime's first
// thread, which has the slack of the thread that loaded the library.
var startSlack, _ = unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)

func loop() {
	runtime.LockOSThread() // never unlocked: this thread lives as long as the process
	for f := range jobs {
		// Children inherit the slack of the thread that forks them, and
		// this thread may have been made by one with a coarser slack (the
		// runtime's monitor in libbox.so, see libbox/capi): the fork
		// server, QEMU and the network helper get the program's own. Set
		// before every job, as another thread may change this one's.
		if startSlack > 0 {
			_ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(startSlack), 0, 0, 0)
		}
		f()
	}
}

// Do runs f on the launcher thread and waits for it: f forks (os/exec's
// Start, syscall.ForkExec) what must die with this process, or what must
// have the program's timer slack. f never waits for a child's exit (Wait
// afterwards, from the caller): every other start would wait with it.
func Do(f func()) {
	once.Do(func() {
		jobs = make(chan func())
		go loop()
	})
	done := make(chan struct{})
	jobs <- func() {
		defer close(done)
		f()
	}
	<-done
}

// ForkExec runs syscall.ForkExec on the launcher thread.
func ForkExec(argv0 string, argv []string, attr *syscall.ProcAttr) (pid int, err error) {
	Do(func() { pid, err = syscall.ForkExec(argv0, argv, attr) })
	return pid, err
}

// Server is a fork server (see package forkserver) started by this
// process: its child, started from the launcher thread through Go's
// vfork path with Pdeathsig SIGKILL, so it dies with this process.
type Server struct {
	*forkserver.Client
	proc    *Proc
	endOnce sync.Once
}

// StartServer starts path (a box agent binary) as a fork server.
func StartServer(path string) (*Server, error) {
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(sp[1])
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		unix.Close(sp[0])
		return nil, err
	}
	defer devnull.Close()
	pidfd := -1
	attr := &syscall.ProcAttr{
		Dir:   "/",
		Env:   []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Files: []uintptr{devnull.Fd(), devnull.Fd(), devnull.Fd(), uintptr(sp[1])},
		Sys:   &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, PidFD: &pidfd},
	}
	pid, err := ForkExec(path, []string{"box-agent", "--fork-server", "fd:3"}, attr)
	if err != nil {
		unix.Close(sp[0])
		return nil, err
	}
	s := &Server{proc: NewProc(pid, pidfd, true)}
	if s.Client, err = forkserver.NewClient(sp[0]); err != nil {
		s.end()
		return nil, err
	}
	return s, nil
}

// Close closes the server's socket and waits for it to exit (it is killed
// when it has not within a few seconds). The children it started keep
// running until their own end (a child that asked for a Pdeathsig gets
// it now). Idempotent.
func (s *Server) Close() error {
	if s.Client != nil {
		s.Client.Close()
	}
	s.end()
	return nil
}

func (s *Server) end() {
	s.endOnce.Do(func() { s.proc.Stop(5 * time.Second) })
}
