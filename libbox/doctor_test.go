package libbox

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func checkByName(r DoctorReport, name string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Check{}, false
}

// On this kind of host (QEMU installed by build.sh, kernel fetched, no
// usable KVM) the VM checks pass and KVM is a warning.
func TestDoctorHere(t *testing.T) {
	r := Doctor(context.Background(), Options{Home: t.TempDir()})
	for _, c := range r.Checks {
		t.Logf("%-8s %-4s %s", c.Name, c.Status, c.Detail)
		if c.Status != CheckOK && c.Fix == "" {
			t.Errorf("%s is %s without a fix line", c.Name, c.Status)
		}
	}
	for _, name := range []string{"qemu", "qemu-img", "kernel", "kvm", "userns", "cgroup", "tun", "space"} {
		if _, ok := checkByName(r, name); !ok {
			t.Errorf("no %q check in the report", name)
		}
	}
	if q, _ := checkByName(r, "qemu"); q.Status == CheckOK && !r.Ready {
		t.Errorf("QEMU found but not ready: %+v", r)
	}
}

// A host without QEMU (an empty PATH) gets a fail line naming the package,
// and VM boxes are reported as unable to run.
func TestDoctorWithoutQEMU(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	r := Doctor(context.Background(), Options{Home: filepath.Join(t.TempDir(), "home")})
	q, _ := checkByName(r, "qemu")
	if q.Status != CheckFail || !strings.Contains(q.Fix, "qemu-system-x86") {
		t.Fatalf("qemu check = %+v, want fail with the package to install", q)
	}
	if r.Ready || contains(r.Runs, IsolationVM) {
		t.Fatalf("report says VM boxes can run without QEMU: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(t.TempDir(), "home")); err == nil {
		t.Fatal("Doctor created the home")
	}
}
