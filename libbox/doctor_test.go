package libbox

import (
	"context"
	"os"
	"path/filepath"
	"slices"
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

// A missing tool is a fail line naming the packages to install, and a
// failed check stops exactly the isolations that need it.
func TestDoctorVerdict(t *testing.T) {
	c := toolCheck("libbox-no-such-tool", "qemu-utils", "test")
	if c.Status != CheckFail || !strings.Contains(c.Fix, "apt-get install qemu-utils") || !strings.Contains(c.Fix, "dnf install qemu-img") {
		t.Fatalf("missing tool: %+v", c)
	}
	r := DoctorReport{Isolation: IsolationVM, Checks: []Check{c, {Name: "kvm", Status: CheckWarn}}}
	r.judge()
	if r.Ready || slices.Contains(r.Runs, IsolationVM) || !slices.Contains(r.Runs, IsolationSandbox) {
		t.Fatalf("a failed VM check: %+v", r)
	}
	r.Checks[0].Status = CheckOK
	r.judge()
	if !r.Ready || len(r.Runs) != 2 {
		t.Fatalf("warnings only: %+v", r)
	}
	home := filepath.Join(t.TempDir(), "home")
	Doctor(context.Background(), Options{Home: home})
	if _, err := os.Stat(home); err == nil {
		t.Fatal("Doctor created the home")
	}
}
