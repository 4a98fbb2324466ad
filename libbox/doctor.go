package libbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// Check statuses of a DoctorReport.
const (
	CheckOK   = "ok"
	CheckWarn = "warn"
	CheckFail = "fail"
)

// Check is one finding of Doctor: what was checked, what was found, and —
// unless it is ok — how to fix it.
type Check struct {
	Name   string `json:"name"`
	Status string `json:"status"` // CheckOK, CheckWarn or CheckFail
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
	// Needed names the isolations that cannot run when this check fails.
	Needed []string `json:"needed_by,omitempty"`
}

// DoctorReport is what Doctor found on this host.
type DoctorReport struct {
	Checks []Check `json:"checks"`
	// Isolation is the default isolation; Ready says whether boxes of it
	// can run here (no failed check it needs).
	Isolation string `json:"isolation"`
	Ready     bool   `json:"ready"`
	// Runs lists every isolation whose needed checks all passed.
	Runs []string `json:"runs"`
}

// Doctor checks what this host needs to run boxes — QEMU, KVM, the guest
// kernel, /dev/net/tun, user namespaces, cgroups, free space in the home —
// without starting a box. It reads the same Options (and environment) Open
// does; it does not create the home.
func Doctor(ctx context.Context, opts Options) DoctorReport {
	var r DoctorReport
	opts, err := opts.WithEnv()
	if err != nil {
		r.Checks = append(r.Checks, Check{Name: "options", Status: CheckFail, Detail: err.Error(),
			Fix: "correct the option or its LIBBOX_* variable", Needed: []string{IsolationVM, IsolationSandbox}})
	}
	home := opts.Home
	r.Checks = append(r.Checks, vmChecks(ctx, opts, home)...)
	r.Checks = append(r.Checks, hostChecks()...)
	r.Checks = append(r.Checks, spaceCheck(home))
	r.Isolation = IsolationVM
	r.judge()
	return r
}

// judge fills Runs and Ready from the checks: an isolation runs unless a
// check it needs failed.
func (r *DoctorReport) judge() {
	r.Runs = nil
	for _, iso := range []string{IsolationVM, IsolationSandbox} {
		ok := true
		for _, c := range r.Checks {
			if c.Status == CheckFail && slices.Contains(c.Needed, iso) {
				ok = false
			}
		}
		if ok {
			r.Runs = append(r.Runs, iso)
		}
	}
	r.Ready = slices.Contains(r.Runs, r.Isolation)
}

// kvmCheck reports whether /dev/kvm can be opened; the rung the VM backend
// uses is reported by the caller from its own decision.
func kvmCheck() Check {
	c := Check{Name: "kvm"}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	switch {
	case err == nil:
		f.Close()
		c.Status, c.Detail = CheckOK, "/dev/kvm is usable"
	case os.IsNotExist(err):
		c.Status, c.Detail = CheckWarn, "no /dev/kvm: VM boxes run under TCG emulation (much slower)"
		c.Fix = "enable virtualization in the firmware (or nested virtualization) and load kvm_intel or kvm_amd"
	default:
		c.Status, c.Detail = CheckWarn, fmt.Sprintf("/dev/kvm: %v: VM boxes run under TCG emulation (much slower)", err)
		c.Fix = "add this user to group kvm (`usermod -aG kvm $USER`, then log in again)"
	}
	return c
}

// spaceCheck reports the free space where the home lives (or would live).
func spaceCheck(home string) Check {
	c := Check{Name: "space", Needed: []string{IsolationVM, IsolationSandbox}}
	dir := home
	for dir != "" {
		if _, err := os.Stat(dir); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		c.Status, c.Detail = CheckWarn, fmt.Sprintf("cannot read free space of %s: %v", dir, err)
		return c
	}
	free := st.Bavail * uint64(st.Bsize)
	c.Detail = fmt.Sprintf("%s: %.1f GiB free", home, float64(free)/(1<<30))
	switch {
	case free < 256<<20:
		c.Status, c.Fix = CheckFail, "free space on that file system, or set LIBBOX_HOME to one with at least 2 GiB free"
	case free < 2<<30:
		c.Status, c.Fix = CheckWarn, "images and box disks need room: free space, or set LIBBOX_HOME elsewhere"
	default:
		c.Status = CheckOK
	}
	return c
}
