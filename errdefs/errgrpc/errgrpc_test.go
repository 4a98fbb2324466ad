package errgrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/libbox/libbox/errdefs"
)

func TestRoundTrip(t *testing.T) {
	for c := errdefs.NotFound; c <= errdefs.Unsupported; c++ {
		err := fmt.Errorf("wrapped: %w", errdefs.New(c, "thing %d went wrong", int(c)))
		back := FromGRPC(ToGRPC(err))
		if errdefs.CodeOf(back) != c || back.Error() != fmt.Sprintf("wrapped: thing %d went wrong", int(c)) {
			t.Fatalf("%v: round trip gave %v (%v)", c, errdefs.CodeOf(back), back)
		}
	}
}

func TestFromGRPC(t *testing.T) {
	cases := []struct {
		err  error
		want errdefs.Code
	}{
		{status.Error(codes.Canceled, "x"), errdefs.Canceled},
		{status.Error(codes.ResourceExhausted, "x"), errdefs.Unavailable},
		{status.Error(codes.PermissionDenied, "x"), errdefs.InvalidArgument},
		{status.Error(codes.Unknown, "x"), errdefs.Internal},
		{context.DeadlineExceeded, errdefs.DeadlineExceeded},
		{errors.New("plain"), errdefs.Internal},
	}
	for _, c := range cases {
		if got := errdefs.CodeOf(FromGRPC(c.err)); got != c.want {
			t.Errorf("FromGRPC(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	if FromGRPC(io.EOF) != io.EOF || FromGRPC(nil) != nil {
		t.Error("io.EOF and nil must pass through unchanged")
	}
}
