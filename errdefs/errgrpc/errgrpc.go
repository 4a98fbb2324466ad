// Package errgrpc maps libbox's error vocabulary (errdefs) to gRPC status
// codes and back. It is the only place that knows both: the agent converts
// every handler error with the server interceptors, and the host converts
// every call's error with the client interceptors, so code on either side
// sees errdefs classes only.
//
// It must never invent classes or rewrite messages: the server's message
// crosses unchanged, the class travels as the status code.
package errgrpc

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/libbox/libbox/errdefs"
)

var toCode = map[errdefs.Code]codes.Code{
	errdefs.NotFound:           codes.NotFound,
	errdefs.AlreadyExists:      codes.AlreadyExists,
	errdefs.InvalidArgument:    codes.InvalidArgument,
	errdefs.FailedPrecondition: codes.FailedPrecondition,
	errdefs.Unavailable:        codes.Unavailable,
	errdefs.DeadlineExceeded:   codes.DeadlineExceeded,
	errdefs.Canceled:           codes.Canceled,
	errdefs.Internal:           codes.Internal,
	errdefs.Unsupported:        codes.Unimplemented,
}

// ToGRPC converts err to a gRPC status error (server side). Status errors
// pass through unchanged.
func ToGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	g, ok := toCode[errdefs.CodeOf(err)]
	if !ok {
		g = codes.Internal
	}
	return status.Error(g, err.Error())
}

// FromGRPC converts a gRPC error (client side) into the vocabulary, keeping
// the server's message. Transport failures become Unavailable; io.EOF (a
// stream's normal end) is returned unchanged so stream readers still see it.
func FromGRPC(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	if errdefs.CodeOf(err) != errdefs.Internal {
		return err // already classified (context errors, converted errors)
	}
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	return errdefs.New(fromCode(s.Code()), "%s", s.Message())
}

func fromCode(g codes.Code) errdefs.Code {
	switch g {
	case codes.OK:
		return errdefs.OK
	case codes.Unknown, codes.DataLoss, codes.Internal:
		return errdefs.Internal
	case codes.Aborted, codes.ResourceExhausted:
		return errdefs.Unavailable
	case codes.PermissionDenied, codes.Unauthenticated, codes.OutOfRange:
		return errdefs.InvalidArgument
	}
	for c, k := range toCode {
		if k == g {
			return c
		}
	}
	return errdefs.Internal
}

// UnaryServerInterceptor converts a handler's error with ToGRPC.
func UnaryServerInterceptor(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	return resp, ToGRPC(err)
}

// StreamServerInterceptor converts a stream handler's error with ToGRPC.
func StreamServerInterceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return ToGRPC(h(srv, ss))
}

// UnaryClientInterceptor converts a call's error with FromGRPC.
func UnaryClientInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return FromGRPC(invoker(ctx, method, req, reply, cc, opts...))
}

// StreamClientInterceptor converts the errors of opening a stream and of
// every SendMsg and RecvMsg on it with FromGRPC.
func StreamClientInterceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, FromGRPC(err)
	}
	return clientStream{cs}, nil
}

type clientStream struct{ grpc.ClientStream }

func (s clientStream) SendMsg(m any) error { return FromGRPC(s.ClientStream.SendMsg(m)) }
func (s clientStream) RecvMsg(m any) error { return FromGRPC(s.ClientStream.RecvMsg(m)) }
func (s clientStream) CloseSend() error    { return FromGRPC(s.ClientStream.CloseSend()) }

// ServerOptions are the options every agent server uses.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(UnaryServerInterceptor),
		grpc.ChainStreamInterceptor(StreamServerInterceptor),
	}
}

// DialOptions are the options every host connection to an agent uses.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(UnaryClientInterceptor),
		grpc.WithChainStreamInterceptor(StreamClientInterceptor),
	}
}
