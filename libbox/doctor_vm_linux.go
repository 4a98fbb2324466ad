package libbox

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"strings"

	"github.com/libbox/libbox/libbox/internal/vmboot"
)

// vmChecks are the QEMU backend's prerequisites: QEMU, qemu-img, KVM and
// the guest kernel it would boot.
func vmChecks(ctx context.Context, opts Options, home string) []Check {
	bin := "qemu-system-x86_64"
	if runtime.GOARCH == "arm64" {
		bin = "qemu-system-aarch64"
	}
	checks := []Check{qemuCheck(ctx, bin), toolCheck("qemu-img", "qemu-utils", "box disks are qcow2 overlays"), kvmCheck()}
	k := Check{Name: "kernel", Needed: []string{IsolationVM}}
	if kern, err := vmboot.FindKernel(opts.Kernel, opts.KernelModules); err != nil {
		k.Status, k.Detail = CheckFail, err.Error()
		k.Fix = "reinstall the libbox package (it ships the guest kernel), run `./build.sh deps` in a source tree, or set LIBBOX_KERNEL"
	} else {
		k.Status, k.Detail = CheckOK, kern.Image
	}
	return append(checks, k)
}

// qemuCheck finds QEMU as the backend does and reads its version.
func qemuCheck(ctx context.Context, bin string) Check {
	c := Check{Name: "qemu", Needed: []string{IsolationVM}}
	p, err := vmboot.LookTool(bin, "qemu-system-x86")
	if err != nil {
		c.Status, c.Detail, c.Fix = CheckFail, bin+" not found", vmboot.InstallHint("qemu-system-x86")
		return c
	}
	out, err := exec.CommandContext(ctx, p, "--version").Output()
	if err != nil {
		c.Status, c.Detail, c.Fix = CheckFail, fmt.Sprintf("%s --version failed: %v", p, err), vmboot.InstallHint("qemu-system-x86")
		return c
	}
	first, _, _ := strings.Cut(string(out), "\n")
	c.Status, c.Detail = CheckOK, p+": "+strings.TrimSpace(first)
	return c
}

// toolCheck finds a helper program VM boxes need.
func toolCheck(name, pkg, why string) Check {
	c := Check{Name: name, Needed: []string{IsolationVM}}
	p, err := vmboot.LookTool(name, pkg)
	if err != nil {
		c.Status, c.Detail, c.Fix = CheckFail, name+" not found ("+why+")", vmboot.InstallHint(pkg)
		return c
	}
	c.Status, c.Detail = CheckOK, p
	return c
}
