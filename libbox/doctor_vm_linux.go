package libbox

import (
	"context"
	"os"
	"runtime"

	"github.com/libbox/libbox/libbox/internal/vmboot"
)

// vmChecks are the QEMU backend's prerequisites: QEMU, qemu-img, KVM and
// the guest kernel it would boot.
func vmChecks(ctx context.Context, opts Options, home string) []Check {
	bin := "qemu-system-x86_64"
	if runtime.GOARCH == "arm64" {
		bin = "qemu-system-aarch64"
	}
	checks := []Check{qemuCheck(ctx, bin), qemuImgCheck(), kvmCheck()}
	k := Check{Name: "kernel", Needed: []string{IsolationVM}}
	if kern, err := vmboot.FindKernel(os.Getenv("LIBBOX_KERNEL"), os.Getenv("LIBBOX_KERNEL_MODULES")); err != nil {
		k.Status, k.Detail = CheckFail, err.Error()
		k.Fix = "reinstall the libbox package (it ships the guest kernel), run `./build.sh deps` in a source tree, or set LIBBOX_KERNEL"
	} else {
		k.Status, k.Detail = CheckOK, kern.Image
	}
	return append(checks, k)
}
