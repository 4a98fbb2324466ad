package errdefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
)

func TestClasses(t *testing.T) {
	for c := NotFound; c <= Unsupported; c++ {
		err := New(c, "thing %d went wrong", int(c))
		if got := CodeOf(fmt.Errorf("wrapped: %w", err)); got != c {
			t.Fatalf("%v: CodeOf = %v", c, got)
		}
		if !errors.Is(err, Class(c)) {
			t.Fatalf("%v: not errors.Is its class", c)
		}
		if ByName(c.String()) != c {
			t.Fatalf("%v: ByName(%q) = %v", c, c.String(), ByName(c.String()))
		}
	}
}

func TestClassification(t *testing.T) {
	cases := []struct {
		err  error
		want Code
	}{
		{nil, OK},
		{context.Canceled, Canceled},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), DeadlineExceeded},
		{os.ErrNotExist, NotFound},
		{errors.New("plain"), Internal},
		{Wrap(Unavailable, io.EOF, "agent went away"), Unavailable},
	}
	for _, c := range cases {
		if got := CodeOf(c.err); got != c.want {
			t.Errorf("CodeOf(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	if err := Wrap(NotFound, os.ErrNotExist, "image %q", "x"); !errors.Is(err, os.ErrNotExist) || err.Error() != `image "x": file does not exist` {
		t.Errorf("Wrap keeps the cause and message: %v", err)
	}
}
