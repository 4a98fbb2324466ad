//go:build !linux && !darwin

package libbox

import (
	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
)

func newVMBackend(Options) (backend.Backend, error) {
	return nil, errdefs.New(errdefs.Unsupported, "isolation \"vm\" needs Linux (QEMU) or macOS (Virtualization.framework)")
}
