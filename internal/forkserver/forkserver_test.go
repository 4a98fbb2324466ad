//go:build linux

package forkserver

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/internal/testutil"
)

// The test binary is its own fork server when asked.
func TestMain(m *testing.M) {
	if os.Getenv("FORKSERVER_TEST_SERVE") == "1" {
		if err := Serve(3); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startServer runs the test binary as a fork server, a child of the test
// that dies with it.
func startServer(t *testing.T) (*Client, *exec.Cmd) {
	t.Helper()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	theirs := os.NewFile(uintptr(sp[1]), "server")
	defer theirs.Close()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "FORKSERVER_TEST_SERVE=1")
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(sp[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		_ = cmd.Wait()
	})
	return c, cmd
}

// waitGone waits until the process of pidfd has exited.
func waitGone(t *testing.T, pidfd int, what string) {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 10000); n != 1 {
		t.Fatalf("%s did not exit: %v", what, err)
	}
}

func ownUserNS(t *testing.T) string {
	ns, err := os.Readlink("/proc/self/ns/user")
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

func alive(pidfd int) bool {
	return unix.PidfdSendSignal(pidfd, 0, nil, 0) == nil
}

func TestForkExec(t *testing.T) {
	c, _ := startServer(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	before := testutil.FDs()
	// In new user and uts namespaces, as a sandbox is: the child is root
	// of its own user namespace.
	attr := &syscall.ProcAttr{
		Dir:   "/",
		Env:   []string{"X=from-request"},
		Files: []uintptr{devnull.Fd(), w.Fd(), w.Fd()},
		Sys: &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWUTS,
			Setsid:      true,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}},
			Pdeathsig:   syscall.SIGKILL,
		},
	}
	pid, pidfd, err := c.ForkExec("/bin/sh", []string{"sh", "-c", `echo "$X $(id -u) $(readlink /proc/self/ns/user)"`}, attr)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	if pid <= 0 {
		t.Fatalf("pid %d", pid)
	}
	buf := make([]byte, 100)
	n, _ := r.Read(buf)
	if got := strings.Fields(string(buf[:n])); len(got) != 3 || got[0] != "from-request" || got[1] != "0" || got[2] == ownUserNS(t) {
		t.Fatalf("child said %q", buf[:n])
	}
	waitGone(t, pidfd, "child")
	if got := testutil.FDs(); got != before { // w closed, the pidfd received
		t.Fatalf("fds %d -> %d, want the same (the write end closed, the pidfd received)", before, got)
	}
}

// A failed exec is reported with its errno; no fd or process is left.
func TestForkExecFails(t *testing.T) {
	c, _ := startServer(t)
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	before := testutil.FDs()
	attr := &syscall.ProcAttr{Files: []uintptr{devnull.Fd(), devnull.Fd(), devnull.Fd()}, Sys: &syscall.SysProcAttr{Setsid: true}}
	_, _, err := c.ForkExec("/no/such/binary", []string{"x"}, attr)
	if !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("got %v, want ENOENT", err)
	}
	// Attributes the server does not carry are refused, not dropped.
	attr.Sys = &syscall.SysProcAttr{Chroot: "/tmp"}
	if _, _, err := c.ForkExec("/bin/true", []string{"true"}, attr); err == nil || !strings.Contains(err.Error(), "unsupported") {
		t.Fatalf("got %v, want an unsupported attribute error", err)
	}
	if got := testutil.FDs(); got != before {
		t.Fatalf("fds %d -> %d", before, got)
	}
	// The server still serves after both.
	attr.Sys = nil
	_, pidfd, err := c.ForkExec("/bin/true", []string{"true"}, attr)
	if err != nil {
		t.Fatal(err)
	}
	waitGone(t, pidfd, "true")
	unix.Close(pidfd)
}

// The server's death kills the children that asked for a Pdeathsig and
// leaves the others (detached boxes); the client then says it is gone.
func TestServerDeath(t *testing.T) {
	c, cmd := startServer(t)
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	start := func(sig syscall.Signal) int {
		attr := &syscall.ProcAttr{Files: []uintptr{devnull.Fd(), devnull.Fd(), devnull.Fd()}, Sys: &syscall.SysProcAttr{Setsid: true, Pdeathsig: sig}}
		_, pidfd, err := c.ForkExec("/bin/sleep", []string{"sleep", "100"}, attr)
		if err != nil {
			t.Fatal(err)
		}
		return pidfd
	}
	tied, detached := start(syscall.SIGKILL), start(0)
	defer unix.Close(tied)
	defer unix.Close(detached)
	if !alive(tied) || !alive(detached) {
		t.Fatal("children not running")
	}
	_ = cmd.Process.Kill()
	waitGone(t, tied, "child with Pdeathsig after the server died")
	time.Sleep(100 * time.Millisecond)
	if !alive(detached) {
		t.Fatal("detached child died with the server")
	}
	_ = unix.PidfdSendSignal(detached, unix.SIGKILL, nil, 0)
	waitGone(t, detached, "detached child")
	attr := &syscall.ProcAttr{Files: []uintptr{devnull.Fd(), devnull.Fd(), devnull.Fd()}}
	if _, _, err := c.ForkExec("/bin/true", []string{"true"}, attr); !errors.Is(err, ErrServerGone) {
		t.Fatalf("got %v, want ErrServerGone", err)
	}
}

// Closing the client ends the server.
func TestClose(t *testing.T) {
	c, cmd := startServer(t)
	c.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("server exited with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not exit after Close")
	}
	if _, _, err := c.ForkExec("/bin/true", []string{"true"}, &syscall.ProcAttr{}); !errors.Is(err, ErrServerGone) {
		t.Fatalf("got %v, want ErrServerGone", err)
	}
}

// TestOtherLaunchProtocol: a server that speaks another launch protocol
// (an older agent binary says {}) is refused as gone, so the host forks
// its boxes itself, and the error names both versions.
func TestOtherLaunchProtocol(t *testing.T) {
	for _, first := range []string{`{}`, `{"protocol":9999}`} {
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		c, err := NewClient(sp[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Write(sp[1], []byte(first)); err != nil {
			t.Fatal(err)
		}
		err = c.WaitReady()
		if !errors.Is(err, ErrServerGone) || !strings.Contains(err.Error(), "launch protocol") {
			t.Errorf("server saying %s: WaitReady = %v, want ErrServerGone naming the launch protocols", first, err)
		}
		if _, _, err := c.ForkExec("/bin/true", []string{"true"}, &syscall.ProcAttr{}); !errors.Is(err, ErrServerGone) {
			t.Errorf("server saying %s: ForkExec = %v, want ErrServerGone", first, err)
		}
		c.Close()
		unix.Close(sp[1])
	}
}
