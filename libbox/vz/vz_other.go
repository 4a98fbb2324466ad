//go:build !darwin

package vz

import (
	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
)

// New reports that Virtualization.framework needs macOS.
func New(opts Options) (backend.Backend, error) {
	return nil, errdefs.New(errdefs.Unsupported, "the vz backend needs macOS (Virtualization.framework); on Linux boxes with isolation \"vm\" use the QEMU backend")
}
