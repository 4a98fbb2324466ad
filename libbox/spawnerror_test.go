package libbox_test

import (
	"errors"
	"testing"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox"
)

// TestSpawnError: a command that never runs is a *SpawnError with its
// reason and subject, and keeps its error class.
func TestSpawnError(t *testing.T) {
	rt := openRT(t, "")
	b := startBox(t, rt, libbox.BoxOptions{})
	cases := []struct {
		name   string
		cmd    libbox.Command
		reason libbox.SpawnReason
		path   string
		class  error
	}{
		{"missing in PATH", libbox.Command{Args: []string{"no-such-cmd"}}, libbox.SpawnNotFound, "no-such-cmd", libbox.ErrNotFound},
		{"missing path", libbox.Command{Args: []string{"/no/such/cmd"}}, libbox.SpawnNotFound, "/no/such/cmd", libbox.ErrNotFound},
		{"no x bit", libbox.Command{Args: []string{"/etc/passwd"}}, libbox.SpawnNotExecutable, "/etc/passwd", libbox.ErrInvalidArgument},
		{"directory", libbox.Command{Args: []string{"/etc"}}, libbox.SpawnNotExecutable, "/etc", libbox.ErrInvalidArgument},
		{"missing cwd", libbox.Command{Args: []string{"true"}, Dir: "/no/such/dir"}, libbox.SpawnBadWorkingDir, "/no/such/dir", libbox.ErrInvalidArgument},
		{"cwd is a file", libbox.Command{Args: []string{"true"}, Dir: "/etc/passwd"}, libbox.SpawnBadWorkingDir, "/etc/passwd", libbox.ErrInvalidArgument},
		{"unknown user", libbox.Command{Args: []string{"true"}, User: "nobody-here"}, libbox.SpawnBadUser, "nobody-here", libbox.ErrInvalidArgument},
		{"unknown group", libbox.Command{Args: []string{"true"}, User: "0:no-group"}, libbox.SpawnBadUser, "0:no-group", libbox.ErrInvalidArgument},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := b.Run(ctxT(t, 30*time.Second), c.cmd)
			var se *libbox.SpawnError
			if !errors.As(err, &se) {
				t.Fatalf("got %T %v, want a *libbox.SpawnError", err, err)
			}
			if se.Reason != c.reason || se.Path != c.path || !errors.Is(err, c.class) || se.Code != errdefs.CodeOf(c.class) || se.Msg == "" || err.Error() != se.Msg {
				t.Errorf("got %+v (is %v: %v), want reason %s path %q", *se, c.class, errors.Is(err, c.class), c.reason, c.path)
			}
		})
	}
	// Failures that are not about spawning carry no SpawnError.
	_, err := b.Run(ctxT(t, 30*time.Second), libbox.Command{Args: []string{"true"}, Env: []string{"NOEQUALS"}})
	var se *libbox.SpawnError
	if err == nil || errors.As(err, &se) {
		t.Errorf("bad env: got %T %v, want a plain InvalidArgument", err, err)
	}
}
