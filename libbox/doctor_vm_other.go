//go:build !linux

package libbox

import (
	"context"
	"runtime"
)

// vmChecks: on macOS the vz backend needs the virtualization entitlement
// and a kernel; the details are checked when a box starts.
func vmChecks(ctx context.Context, opts Options, home string) []Check {
	if runtime.GOOS == "darwin" {
		return []Check{{Name: "vm", Status: CheckOK, Detail: "Virtualization.framework (checked when a box starts)"}}
	}
	return []Check{{Name: "vm", Status: CheckFail, Detail: "VM boxes need Linux (QEMU) or macOS", Needed: []string{IsolationVM}}}
}
