package libbox

import (
	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/agentpb"
)

// SpawnReason says why a command never ran. The strings are part of the C
// ABI (box_exit_t.reason) and of the bindings (Python and Node
// `err.reason`).
type SpawnReason string

const (
	// SpawnNotFound: the program (or its interpreter) is missing; a shell
	// exits 127.
	SpawnNotFound SpawnReason = "not_found"
	// SpawnNotExecutable: it exists but cannot run (a directory, no execute
	// permission, not a binary for the box); a shell exits 126.
	SpawnNotExecutable SpawnReason = "not_executable"
	// SpawnBadWorkingDir: the working directory is not an absolute path, is
	// missing or is not a directory.
	SpawnBadWorkingDir SpawnReason = "bad_working_dir"
	// SpawnBadUser: the user or group is not known in the box.
	SpawnBadUser SpawnReason = "bad_user"
)

// SpawnError is a command that never ran, returned by Box.Exec and
// Box.Run. Use errors.As to read the reason; errors.Is still matches its
// class (ErrNotFound for SpawnNotFound, ErrInvalidArgument for the others).
type SpawnError struct {
	Reason SpawnReason
	// Path is what the reason is about: the command as given (Args[0]) for
	// SpawnNotFound and SpawnNotExecutable, the working directory for
	// SpawnBadWorkingDir, the user spec for SpawnBadUser.
	Path string
	Msg  string // the agent's message
	Code errdefs.Code
}

func (e *SpawnError) Error() string { return e.Msg }

// Unwrap returns the class sentinel, so errdefs and errors.Is classify it.
func (e *SpawnError) Unwrap() error { return errdefs.Class(e.Code) }

var spawnReasons = map[agentpb.Exit_SpawnReason]SpawnReason{
	agentpb.Exit_NOT_FOUND:       SpawnNotFound,
	agentpb.Exit_NOT_EXECUTABLE:  SpawnNotExecutable,
	agentpb.Exit_BAD_WORKING_DIR: SpawnBadWorkingDir,
	agentpb.Exit_BAD_USER:        SpawnBadUser,
}

// spawnFailure is the error of an exec whose first event is its Exit: a
// *SpawnError when the agent gave a reason, else the classed error.
func spawnFailure(ex *agentpb.Exit, start *agentpb.ExecStart) error {
	reason, ok := spawnReasons[ex.GetSpawnReason()]
	if ex.GetStatus() != agentpb.Exit_SPAWN_FAILED || !ok {
		return exitError(ex)
	}
	e := &SpawnError{Reason: reason, Msg: ex.GetError(), Code: errdefs.CodeOf(exitError(ex))}
	switch reason {
	case SpawnBadWorkingDir:
		e.Path = start.GetDir()
	case SpawnBadUser:
		e.Path = start.GetUser()
	default:
		if len(start.GetArgs()) > 0 {
			e.Path = start.GetArgs()[0]
		}
	}
	return e
}
