package libbox_test

import (
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/libbox/libbox/libbox"
)

// TestVMNetwork runs the network rows (DNS, 10 MB HTTP, 64 connections,
// the allow-list, the bypass attempts, published ports, stop) in one VM
// box: TCG boots are slow, so every row shares it.
func TestVMNetwork(t *testing.T) {
	requireVMHost(t)
	testBoxNetwork(t, libbox.IsolationVM)
}

// TestVMDetachedNetwork: a detached VM box keeps its network and published
// ports after the process that started it exits (its link, QEMU's socket,
// is held by the box's network helper).
func TestVMDetachedNetwork(t *testing.T) {
	requireVMHost(t)
	testDetachedNetwork(t, libbox.IsolationVM)
}

// vmNetworkOff checks a VM box without network (TestVMGather16's box):
// loopback only, and a connect fails at once.
func vmNetworkOff(t *testing.T, b *libbox.Box) {
	t.Helper()
	if links := sh(t, b, "ip -o link | awk -F': ' '{print $2}'"); strings.TrimSpace(links) != "lo" {
		t.Fatalf("network off: links %q, want lo only", links)
	}
	r := run(t, b, "sh", "-c", "nc -w 3 192.0.2.1 80 </dev/null")
	if r.ExitCode == 0 || !strings.Contains(string(r.Stderr), "unreachable") {
		t.Fatalf("connect with the network off: exit %d, %q, want network unreachable", r.ExitCode, r.Stderr)
	}
	if b.Info().Network != nil {
		t.Fatal("network info for a box without network")
	}
}

// requireVMHost skips where QEMU is missing (CI installs it).
func requireVMHost(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil && runtime.GOARCH == "amd64" {
		t.Skip("qemu-system-x86_64 not installed: apt-get install qemu-system-x86 qemu-utils (./build.sh deps does)")
	}
}
