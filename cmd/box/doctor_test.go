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
// install, a JSON report that says so, and a non-zero exit.
func TestDoctorOnABareHost(t *testing.T) {
	env := []string{"PATH=" + t.TempDir(), "HOME=" + t.TempDir(), "LIBBOX_HOME=" + t.TempDir(),
		"LIBBOX_KERNEL=/no/such/vmlinuz"}
	out, code := doctorRun(t, env)
	if code == 0 {
		t.Fatalf("box doctor exited 0 without QEMU or a kernel:\n%s", out)
	}
	for _, want := range []string{"fail  qemu ", "apt-get install qemu-system-x86", "fail  kernel ", "cannot run here"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	js, code := doctorRun(t, env, "--json")
	var r libbox.DoctorReport
	if err := json.Unmarshal([]byte(js), &r); err != nil || code == 0 || r.Ready {
		t.Fatalf("--json: code %d, ready %v, err %v:\n%s", code, r.Ready, err, js)
	}
	if _, code := doctorRun(t, env, "extra"); code != 125 {
		t.Errorf("box doctor extra: exit %d, want 125", code)
	}
}
