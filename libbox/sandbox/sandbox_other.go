//go:build !linux

// Package sandbox is the Linux namespace sandbox backend; elsewhere it
// only reports that it is unsupported.
package sandbox

import (
	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
)

// Options configure the backend.
type Options struct {
	Home string
	Logf func(string, ...any)
}

// New reports that sandboxes need Linux.
func New(opts Options) (backend.Backend, error) {
	return nil, errdefs.New(errdefs.Unsupported, "isolation \"sandbox\" needs a Linux host: use isolation \"vm\"")
}
