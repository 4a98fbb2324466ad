package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/libbox/libbox/libbox"
)

func doctorRun(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, boxBin, append([]string{"doctor"}, args...)...)
	cmd.Env = env
	out, err := cmd.Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// On this host (QEMU and the kernel installed by build.sh, no KVM): KVM
// is a warning with its fix, everything a VM box needs is ok, exit 0.
func TestDoctorOnThisHost(t *testing.T) {
	out, code := doctorRun(t, append(os.Environ(), "LIBBOX_HOME="+t.TempDir()))
	t.Log("\n" + out)
	if code != 0 {
		t.Fatalf("box doctor exited %d on a host that runs VM boxes:\n%s", code, out)
	}
	for _, want := range []string{"ok    qemu ", "ok    kernel ", "can run here"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	if _, err := os.Stat("/dev/kvm"); err != nil && !strings.Contains(out, "warn  kvm") {
		t.Errorf("no KVM here, but no kvm warning:\n%s", out)
	}
}

// A host without QEMU and without a kernel: fail lines that say what to
// install, a JSON report that says so, and a non-zero exit. QEMU is hidden
// in a private mount namespace (its binaries covered by /dev/null), so the
// test needs root and unshare(1), as CI has.
func TestDoctorOnABareHost(t *testing.T) {
	requireRoot(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare not found: apt-get install util-linux")
	}
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "LIBBOX_HOME=" + t.TempDir(),
		"LIBBOX_KERNEL=/no/such/vmlinuz"}
	hide := "for b in /usr/bin/qemu-system-x86_64 /usr/bin/qemu-system-aarch64 /usr/bin/qemu-img; do " +
		"[ -e $b ] && mount --bind /dev/null $b; done; exec \"$@\""
	wrap := func(args ...string) []string {
		return append([]string{"-m", "--propagation", "private", "sh", "-c", hide, "sh", boxBin, "doctor"}, args...)
	}
	run := func(args ...string) (string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, unshare, wrap(args...)...)
		cmd.Env = env
		out, err := cmd.Output()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	out, code := run()
	if code == 0 {
		t.Fatalf("box doctor exited 0 without QEMU or a kernel:\n%s", out)
	}
	for _, want := range []string{"fail  qemu ", "apt-get install qemu-system-x86", "dnf install qemu-system-x86-core",
		"fail  qemu-img ", "fail  kernel ", "cannot run here"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	js, code := run("--json")
	var r libbox.DoctorReport
	if err := json.Unmarshal([]byte(js), &r); err != nil || code == 0 || r.Ready {
		t.Fatalf("--json: code %d, ready %v, err %v:\n%s", code, r.Ready, err, js)
	}
	if _, code := run("extra"); code != 125 {
		t.Errorf("box doctor extra: exit %d, want 125", code)
	}
}
