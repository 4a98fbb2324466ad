// Package errdefs is libbox's one error vocabulary: a small set of error
// classes, wrapped with %w everywhere. Both sides of the agent protocol
// import it; the gRPC mapping lives in errdefs/errgrpc and the C mapping in
// libbox/bridge (C status codes and binding exceptions map from Code).
//
// It depends on the standard library only, and must never grow a class per
// failure: messages carry the detail and say what to do; the class says how
// a caller should react.
package errdefs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
)

// The error classes.
var (
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrUnavailable        = errors.New("unavailable")
	ErrDeadlineExceeded   = errors.New("deadline exceeded")
	ErrCanceled           = errors.New("canceled")
	ErrInternal           = errors.New("internal")
	ErrUnsupported        = errors.New("unsupported")
)

// Code is the stable numeric form of a class, shared with the C ABI
// (BOX_E_* in include/libbox.h). 0 is success.
type Code int

const (
	OK                 Code = 0
	NotFound           Code = 1
	AlreadyExists      Code = 2
	InvalidArgument    Code = 3
	FailedPrecondition Code = 4
	Unavailable        Code = 5
	DeadlineExceeded   Code = 6
	Canceled           Code = 7
	Internal           Code = 8
	Unsupported        Code = 9
)

var classes = []struct {
	code Code
	err  error
	name string
}{
	{NotFound, ErrNotFound, "NotFound"},
	{AlreadyExists, ErrAlreadyExists, "AlreadyExists"},
	{InvalidArgument, ErrInvalidArgument, "InvalidArgument"},
	{FailedPrecondition, ErrFailedPrecondition, "FailedPrecondition"},
	{Unavailable, ErrUnavailable, "Unavailable"},
	{DeadlineExceeded, ErrDeadlineExceeded, "DeadlineExceeded"},
	{Canceled, ErrCanceled, "Canceled"},
	{Internal, ErrInternal, "Internal"},
	{Unsupported, ErrUnsupported, "Unsupported"},
}

// String is the class name ("NotFound", ...), as used in the protocol,
// JSON, Python exception names and JS error codes.
func (c Code) String() string {
	for _, k := range classes {
		if k.code == c {
			return k.name
		}
	}
	if c == OK {
		return "OK"
	}
	return "Internal"
}

// CodeOf classifies err. Unclassified errors are Internal; context errors
// map to DeadlineExceeded and Canceled.
func CodeOf(err error) Code {
	if err == nil {
		return OK
	}
	for _, k := range classes {
		if errors.Is(err, k.err) {
			return k.code
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return Canceled
	case errors.Is(err, os.ErrNotExist):
		return NotFound
	case errors.Is(err, os.ErrExist):
		return AlreadyExists
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.EINVAL):
		return InvalidArgument
	}
	return Internal
}

// ByName returns the class for a name produced by Code.String.
func ByName(name string) Code {
	for _, k := range classes {
		if k.name == name {
			return k.code
		}
	}
	return Internal
}

// Class returns the sentinel error of a code.
func Class(c Code) error {
	for _, k := range classes {
		if k.code == c {
			return k.err
		}
	}
	return ErrInternal
}

// New returns an error of class c with a message (no class suffix is added).
func New(c Code, format string, args ...any) error {
	return &classed{class: Class(c), msg: fmt.Sprintf(format, args...)}
}

// Wrap classifies err as c, keeping err in the chain and its message.
// A full file system (ENOSPC, EDQUOT) is FailedPrecondition wherever a
// caller guessed Internal or Unavailable: the caller can fix it by freeing
// space, and retrying at once will not help.
func Wrap(c Code, err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if err != nil {
		msg += ": " + err.Error()
		if (c == Internal || c == Unavailable) && (errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)) {
			c = FailedPrecondition
			msg += " (the file system is full: free space, then retry)"
		}
	}
	return &classed{class: Class(c), msg: msg, cause: err}
}

type classed struct {
	class error
	msg   string
	cause error
}

func (e *classed) Error() string   { return e.msg }
func (e *classed) Unwrap() []error { return []error{e.class, e.cause} }

// Is helpers.
func IsNotFound(err error) bool           { return CodeOf(err) == NotFound }
func IsAlreadyExists(err error) bool      { return CodeOf(err) == AlreadyExists }
func IsInvalidArgument(err error) bool    { return CodeOf(err) == InvalidArgument }
func IsFailedPrecondition(err error) bool { return CodeOf(err) == FailedPrecondition }
func IsUnavailable(err error) bool        { return CodeOf(err) == Unavailable }
func IsDeadlineExceeded(err error) bool   { return CodeOf(err) == DeadlineExceeded }
func IsCanceled(err error) bool           { return CodeOf(err) == Canceled }
func IsUnsupported(err error) bool        { return CodeOf(err) == Unsupported }
