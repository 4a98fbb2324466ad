// Package libbox is the Go API of libbox: a Runtime holds boxes (isolated
// Linux environments running an image) stored under a home directory;
// a Box runs many processes concurrently and streams their output.
//
// Every blocking call takes a context first. Errors belong to one
// vocabulary (ErrNotFound, ErrInvalidArgument, ...; test with errors.Is)
// and their messages say what to do. This package never forks inside a
// box and never changes process-global state of its host: process
// creation happens in the box's agent; host helpers (sandbox init, QEMU)
// start from a dedicated OS thread.
package libbox

import (
	"github.com/libbox/libbox/errdefs"
)

// Version of the library, set at build time.
var Version = "dev"

// The error vocabulary (see errdefs): every error returned by this package
// matches exactly one of these with errors.Is.
var (
	ErrNotFound           = errdefs.ErrNotFound
	ErrAlreadyExists      = errdefs.ErrAlreadyExists
	ErrInvalidArgument    = errdefs.ErrInvalidArgument
	ErrFailedPrecondition = errdefs.ErrFailedPrecondition
	ErrUnavailable        = errdefs.ErrUnavailable
	ErrDeadlineExceeded   = errdefs.ErrDeadlineExceeded
	ErrCanceled           = errdefs.ErrCanceled
	ErrInternal           = errdefs.ErrInternal
	ErrUnsupported        = errdefs.ErrUnsupported
)

// Isolation names.
const (
	IsolationVM      = "vm"
	IsolationSandbox = "sandbox"
)

// Box states.
const (
	StateCreated = "created"
	StateRunning = "running"
	StateStopped = "stopped"
)
