package boot

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/guest/bootparam"
)

// TestSandboxRefusesOtherHost: an agent started by a host of another
// launch protocol (or an older host, which states none) says its own on
// the boot socket and refuses to boot, naming both; it mounts nothing.
func TestSandboxRefusesOtherHost(t *testing.T) {
	for _, host := range []int{0, bootparam.LaunchProtocol + 1} {
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(&bootparam.SandboxSpec{Protocol: host, BootSocket: sp[1], Rootfs: "/nonexistent"})
		spec := filepath.Join(t.TempDir(), "spec.json")
		if err := os.WriteFile(spec, b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = Sandbox(spec)
		if err == nil || !strings.Contains(err.Error(), "launch protocol") || !strings.Contains(err.Error(), "./build.sh build") {
			t.Errorf("host protocol %d: Sandbox = %v, want a refusal naming the launch protocols and the fix", host, err)
		}
		buf := make([]byte, 128)
		n, err := unix.Read(sp[0], buf)
		if v, ok := bootparam.ParseHello(buf[:max(n, 0)]); err != nil || !ok || v != bootparam.LaunchProtocol {
			t.Errorf("host protocol %d: the agent said %q (%v), want its Hello", host, buf[:max(n, 0)], err)
		}
		unix.Close(sp[0])
		unix.Close(sp[1])
	}
}
