package sandbox_test

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/bootparam"
	"github.com/libbox/libbox/internal/testutil"
	"github.com/libbox/libbox/libbox"
)

// TestMain lets the test binary stand in for a box agent of another build
// (see fakeAgent); otherwise it runs the tests.
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[0] == "box-agent" {
		fakeAgent(os.Args[1])
		os.Exit(3)
	}
	os.Exit(m.Run())
}

// fakeAgent is an agent of another build, started as the sandbox backend
// starts one. As a fork server it says {} (what servers said before the
// launch protocol); as a box agent it behaves as its spec's hostname (the
// box's name) says:
//   - "fake-other": states launch protocol 99;
//   - "fake-none": states nothing and closes its boot socket, as agents
//     before the launch protocol did, and stays alive;
//   - "fake-ready": sends one byte, as still older agents did.
//
// Then it waits to be killed.
func fakeAgent(mode string) {
	if mode == "--fork-server" {
		_, _ = unix.Write(3, []byte(`{}`))
		_, _ = io.Copy(io.Discard, os.NewFile(3, "fork server"))
		return
	}
	var s bootparam.SandboxSpec
	b, err := io.ReadAll(os.NewFile(5, "spec"))
	if err != nil || json.Unmarshal(b, &s) != nil {
		return
	}
	switch s.Hostname {
	case "fake-other":
		_, _ = unix.Write(s.BootSocket, bootparam.Hello(99))
	case "fake-none":
		unix.Close(s.BootSocket)
	case "fake-ready":
		_, _ = unix.Write(s.BootSocket, []byte{'r'})
	}
	for {
		time.Sleep(time.Hour)
	}
}

// TestAgentOfAnotherBuild: an agent that speaks another launch protocol,
// or none, fails the start at once with FailedPrecondition naming the
// agent, both versions and the fix (it used to fail as "wait for host
// mounts: broken pipe"), and leaves no process or fd behind.
func TestAgentOfAnotherBuild(t *testing.T) {
	requireSandbox(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	fds := testutil.FDs()
	home := t.TempDir()
	rt, err := libbox.Open(libbox.Options{Home: home, Agent: self, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	lib := fmt.Sprintf("this library speaks %d: rebuild both from one source (./build.sh build)", bootparam.LaunchProtocol)
	for _, tc := range []struct{ name, says string }{
		{"fake-other", "speaks launch protocol 99"},
		{"fake-none", "states no launch protocol"},
		{"fake-ready", "states no launch protocol"},
	} {
		b, err := rt.Create(ctx(t, time.Minute), libbox.BoxOptions{Name: tc.name, Isolation: libbox.IsolationSandbox})
		if err != nil {
			t.Fatal(err)
		}
		err = b.Start(ctx(t, time.Minute))
		want := "the box agent at " + self + " " + tc.says
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), lib) {
			t.Errorf("%s: Start = %v\nwant FailedPrecondition with %q and %q", tc.name, err, want, lib)
		}
		if b.Running() {
			t.Errorf("%s: box running after a failed start", tc.name)
		}
		if _, err := os.Stat(filepath.Join(home, "boxes", b.ID(), "agent.sock")); err == nil {
			t.Errorf("%s: agent.sock left in the box dir", tc.name)
		}
	}
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	kids, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", os.Getpid()))
	for _, k := range kids {
		if b, _ := os.ReadFile(k); len(strings.TrimSpace(string(b))) > 0 {
			t.Errorf("child processes left: %s", b)
		}
	}
	if now := testutil.FDs(); now > fds {
		t.Errorf("fds: %d open, %d before", now, fds)
	}
}
