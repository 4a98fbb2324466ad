package launch

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/internal/procstat"
	"github.com/libbox/libbox/internal/testutil"
)

// startSleep forks sleep from the launcher thread with a pidfd.
func startSleep(t *testing.T) *Proc {
	t.Helper()
	pidfd := -1
	attr := &syscall.ProcAttr{Sys: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, PidFD: &pidfd}}
	pid, err := ForkExec("/bin/sleep", []string{"sleep", "60"}, attr)
	if err != nil {
		t.Fatal(err)
	}
	return NewProc(pid, pidfd, true)
}

// TestProc: a Wait with a timeout returns false while the process runs;
// Kill ends it, Wait sees it, Reap collects SIGKILL; Close wakes a Wait in
// progress; a Proc closed, or of a process gone, signals nothing and
// fails nothing; Stop ends a process that ignores its grace; no fd stays.
func TestProc(t *testing.T) {
	fds := testutil.FDs()

	p := startSleep(t)
	if p.Wait(20 * time.Millisecond) {
		t.Fatal("Wait: a running process reported exited")
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if !p.Wait(-1) || !p.Wait(0) {
		t.Fatal("Wait after Kill: not exited")
	}
	if err := p.Kill(); err != nil {
		t.Errorf("Kill of an exited process: %v", err)
	}
	if ws, ok := p.Reap(); !ok || !ws.Signaled() || ws.Signal() != unix.SIGKILL {
		t.Errorf("Reap = %v, %v; want killed by SIGKILL", ws, ok)
	}
	p.Close()
	p.Close()
	if err := p.Kill(); err != nil {
		t.Errorf("Kill after Close: %v", err)
	}

	q := startSleep(t)
	woke := make(chan bool)
	go func() { woke <- q.Wait(-1) }()
	time.Sleep(10 * time.Millisecond) // let Wait block (it returns false either way)
	q.Close()
	if <-woke {
		t.Error("Wait woken by Close reported the process exited")
	}
	// Closed: q cannot kill it any more; its pid still can.
	if err := syscall.Kill(q.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, ok := q.Reap(); !ok {
		t.Error("Reap of a closed Proc's child failed")
	}

	r := startSleep(t)
	r.Stop(10 * time.Millisecond) // sleep does not exit within its grace
	if err := syscall.Kill(r.Pid, 0); err != syscall.ESRCH {
		t.Errorf("after Stop, pid %d: kill 0 = %v, want ESRCH (killed and reaped)", r.Pid, err)
	}

	self, err := OpenProc(os.Getpid(), false)
	if err != nil {
		t.Fatalf("OpenProc of this process: %v", err)
	}
	if self.Wait(0) {
		t.Error("Wait: this process reported exited")
	}
	self.Close()
	if now := testutil.FDs(); now > fds {
		t.Errorf("fds: %d open, %d before", now, fds)
	}
}

// TestInNamespace: fn runs in the mount namespace of another process (a
// child in a new one), its error comes back, and this process's threads
// stay in their own namespace; an unknown kind is refused.
func TestInNamespace(t *testing.T) {
	pidfd := -1
	attr := &syscall.ProcAttr{Sys: &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL, PidFD: &pidfd}}
	pid, err := ForkExec("/bin/sleep", []string{"sleep", "60"}, attr)
	if err != nil {
		testutil.SkipOrFail(t, "cannot make a mount namespace (%v): run as root", err)
	}
	p := NewProc(pid, pidfd, true)
	defer p.Stop(0)
	theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		t.Fatal(err)
	}
	ours, _ := os.Readlink("/proc/self/ns/mnt")
	if theirs == ours {
		t.Fatal("the child shares this process's mount namespace")
	}
	errFn := errors.New("from fn")
	var in string
	err = InNamespace(pid, "mnt", func() error {
		in, _ = os.Readlink("/proc/thread-self/ns/mnt")
		return errFn
	})
	if err != errFn || in != theirs {
		t.Errorf("InNamespace = %v in %s; want %v in %s", err, in, errFn, theirs)
	}
	if now, _ := os.Readlink("/proc/self/ns/mnt"); now != ours {
		t.Errorf("this process's main thread moved to %s", now)
	}
	if err := InNamespace(pid, "pid", func() error { return nil }); err == nil {
		t.Error(`InNamespace(kind "pid") ran`)
	}
}

// TestChildTimerSlack: a process started from the launcher thread has the
// timer slack the program started with, even when every thread of the
// process, the launcher's included, was given a coarser one since (as
// threads made by libbox.so's monitor are).
func TestChildTimerSlack(t *testing.T) {
	if startSlack <= 0 {
		t.Fatalf("no starting slack read (%d)", startSlack)
	}
	Do(func() {}) // the launcher thread exists
	const coarse = 3 * time.Millisecond
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range tasks {
		tid, _ := strconv.Atoi(e.Name())
		if err := procstat.SetThreadSlack(tid, coarse); err != nil && !os.IsNotExist(err) {
			if errors.Is(err, os.ErrPermission) {
				t.Skipf("setting other threads' timer slack needs CAP_SYS_NICE: run the tests as root (%v)", err)
			}
			t.Fatal(err)
		}
	}
	defer func() {
		for _, e := range tasks {
			tid, _ := strconv.Atoi(e.Name())
			_ = procstat.SetThreadSlack(tid, time.Duration(startSlack))
		}
	}()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pidfd := -1
	attr := &syscall.ProcAttr{
		Files: []uintptr{0, w.Fd(), 2},
		Sys:   &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, PidFD: &pidfd},
	}
	pid, err := ForkExec("/bin/sh", []string{"sh", "-c", "read s </proc/self/timerslack_ns && echo $s"}, attr)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	p := NewProc(pid, pidfd, true)
	defer p.Stop(0)
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(out)), strconv.Itoa(startSlack); got != want {
		t.Errorf("child's timer slack = %q, want the program's %s", got, want)
	}
	if ws, ok := p.Reap(); !ok || ws.ExitStatus() != 0 {
		t.Errorf("child: %v", ws)
	}
}
