//go:build !darwin

// Package vz is the macOS micro-VM backend (Virtualization.framework through
// github.com/Code-Hex/vz/v3); on other systems it only says so.
package vz

import (
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/errdefs"
)

// Options configure the backend.
type Options struct {
	Home string
	Logf func(string, ...any)
}

// New reports that Virtualization.framework needs macOS.
func New(opts Options) (backend.Backend, error) {
	return nil, errdefs.New(errdefs.Unsupported, "the vz backend needs macOS (Virtualization.framework); on Linux use the QEMU backend")
}
