//go:build !linux

package backend

import (
	"encoding/json"
	"errors"
	"syscall"
)

// ProcStartTime is not available here; callers fall back to kill(pid, 0).
func ProcStartTime(pid int) (uint64, error) { return 0, errors.New("no /proc") }

// ProcAlive reports whether the recorded pid exists.
func ProcAlive(state json.RawMessage) bool {
	var ps ProcState
	if len(state) == 0 || json.Unmarshal(state, &ps) != nil || ps.Pid <= 0 {
		return false
	}
	return syscall.Kill(ps.Pid, 0) == nil
}
