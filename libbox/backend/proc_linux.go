package backend

import (
	"encoding/json"
	"fmt"

	"github.com/libbox/libbox/internal/procstat"
)

// ProcStartTime returns the start time (clock ticks since boot) of pid,
// which tells a live process from a recycled pid.
func ProcStartTime(pid int) (uint64, error) {
	st, err := procstat.Read(pid)
	if err != nil {
		return 0, err
	}
	if st.State == 'Z' || st.State == 'X' {
		return 0, fmt.Errorf("pid %d is a zombie", pid)
	}
	return st.StartTicks, nil
}

// ProcAlive reports whether the process recorded in state still runs.
func ProcAlive(state json.RawMessage) bool {
	var ps ProcState
	if len(state) == 0 || json.Unmarshal(state, &ps) != nil || ps.Pid <= 0 {
		return false
	}
	st, err := ProcStartTime(ps.Pid)
	return err == nil && st == ps.StartTime
}
