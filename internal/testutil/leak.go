package testutil

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// FDs counts the open file descriptors of this process (0 where
// /proc/self/fd does not exist). The runtime's poller opens its own fds on
// first use; FDs starts it first so they are counted from the start.
func FDs() int {
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	ents, _ := os.ReadDir("/proc/self/fd")
	return len(ents)
}

// Leaks reports goroutines still running (but those matched by ignore) and
// file descriptors above fdsBefore (a count from FDs taken before).
func Leaks(fdsBefore int, ignore ...goleak.Option) error {
	if err := goleak.Find(ignore...); err != nil {
		return fmt.Errorf("goroutine leak: %w", err)
	}
	if now := FDs(); now > fdsBefore {
		return fmt.Errorf("fd leak: %d open fds, %d before the tests", now, fdsBefore)
	}
	return nil
}

// Main runs a package's tests through m and, when they pass, checks that
// every goroutine has ended (but those matched by ignore) and that no file
// descriptor is left open; a leak fails the run, and so does an error from
// done (the package's teardown, run after the tests; may be nil). Call it
// from TestMain.
func Main(m *testing.M, done func() error, ignore ...goleak.Option) {
	fds := FDs()
	code := m.Run()
	if done != nil {
		if err := done(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	if code == 0 {
		if err := Leaks(fds, ignore...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}
