// Package errdefs is libbox's one error vocabulary: a small set of error
// classes, wrapped with %w everywhere, and mapped to gRPC codes here and only
// here (C status codes and binding exceptions map from Code).
//
// It must never grow a class per failure: messages carry the detail and say
// what to do; the class says how a caller should react.
package errdefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
	grpc codes.Code
}{
	{NotFound, ErrNotFound, "NotFound", codes.NotFound},
	{AlreadyExists, ErrAlreadyExists, "AlreadyExists", codes.AlreadyExists},
	{InvalidArgument, ErrInvalidArgument, "InvalidArgument", codes.InvalidArgument},
	{FailedPrecondition, ErrFailedPrecondition, "FailedPrecondition", codes.FailedPrecondition},
	{Unavailable, ErrUnavailable, "Unavailable", codes.Unavailable},
	{DeadlineExceeded, ErrDeadlineExceeded, "DeadlineExceeded", codes.DeadlineExceeded},
	{Canceled, ErrCanceled, "Canceled", codes.Canceled},
	{Internal, ErrInternal, "Internal", codes.Internal},
	{Unsupported, ErrUnsupported, "Unsupported", codes.Unimplemented},
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
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return fromGRPC(s.Code())
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
func Wrap(c Code, err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if err != nil {
		msg += ": " + err.Error()
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

// ToGRPC converts err to a gRPC status error (server side).
func ToGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	c := CodeOf(err)
	g := codes.Internal
	for _, k := range classes {
		if k.code == c {
			g = k.grpc
		}
	}
	return status.Error(g, err.Error())
}

// FromGRPC converts a gRPC error (client side) into the vocabulary, keeping
// the server's message. Transport failures become Unavailable.
func FromGRPC(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, io.EOF) {
		return Wrap(Unavailable, err, "agent connection closed")
	}
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	c := fromGRPC(s.Code())
	return &classed{class: Class(c), msg: s.Message(), cause: nil}
}

func fromGRPC(g codes.Code) Code {
	switch g {
	case codes.OK:
		return OK
	case codes.Unknown, codes.DataLoss, codes.Internal:
		return Internal
	case codes.Aborted, codes.ResourceExhausted:
		return Unavailable
	case codes.PermissionDenied, codes.Unauthenticated, codes.OutOfRange:
		return InvalidArgument
	}
	for _, k := range classes {
		if k.grpc == g {
			return k.code
		}
	}
	return Internal
}
