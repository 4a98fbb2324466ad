//go:build !linux

// Package forkserver starts processes for a large host process from a
// small one; it exists on Linux only.
package forkserver

import "errors"

// Serve is Linux only.
func Serve(fd int) error { return errors.New("fork server: Linux only") }
