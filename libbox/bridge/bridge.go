// Package bridge is everything behind the C ABI except cgo: the handle
// table, JSON option bags, and the asynchronous calls with their
// exactly-once completion rules. libbox/capi only converts C types and
// calls in here, so all of this is testable from Go.
//
// Callbacks given to this package are called from goroutines it owns,
// never while it holds a lock: a callback may call back into the bridge.
//
// One file per job:
//   - bridge.go:  the ABI version, completion types and the error status
//   - handles.go: the handle table (kinds, lookup, Release, LiveHandles)
//   - schemas.go: the JSON option bags and requests, decoded strictly
//   - calls.go:   runtime, box and image calls (async, boxAsync)
//   - exec.go:    exec state and its control (stdin, signal, resize, cancel)
//   - fs.go:      file-system, watch, stats and process calls
package bridge

import (
	"fmt"
	"time"

	"github.com/libbox/libbox/errdefs"
)

// ABIVersion matches LIBBOX_ABI_VERSION in include/libbox.h.
const ABIVersion = 1

// Done is the completion of an asynchronous call: status 0 and the handle
// (or 0) and result JSON (or ""), or an error status and message.
type Done func(status int32, msg string, handle uint64, json string)

// Progress reports image pull progress.
type Progress func(layer string, done, total int64)

// ExitInfo is how an exec ended.
type ExitInfo struct {
	Status   int32 // 0 when the process ran and ended
	ExitCode int32
	Signal   int32
	Duration time.Duration
	Message  string
	// Reason is why the command never ran (a libbox.SpawnReason:
	// "not_found", "not_executable", "bad_working_dir", "bad_user"), or,
	// with Status 0, ReasonOOMKilled, or "".
	Reason string
}

// ReasonOOMKilled is ExitInfo.Reason for a process the OOM killer ended
// (libbox.ExitStatus.OOMKilled).
const ReasonOOMKilled = "oom_killed"

// ExecCallbacks receive an exec's output and end; any may be nil.
type ExecCallbacks struct {
	Stdout func([]byte)
	Stderr func([]byte)
	Exit   func(ExitInfo)
}

// Error is a failed call: a status code and a message.
type Error struct {
	Code int32
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func fail(c errdefs.Code, format string, args ...any) error {
	return &Error{Code: int32(c), Msg: fmt.Sprintf(format, args...)}
}

// Status converts any error to (status, message).
func Status(err error) (int32, string) {
	if err == nil {
		return 0, ""
	}
	if e, ok := err.(*Error); ok {
		return e.Code, e.Msg
	}
	return int32(errdefs.CodeOf(err)), err.Error()
}
