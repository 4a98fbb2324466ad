package backend

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcStartTime returns the start time (clock ticks since boot) of pid,
// which tells a live process from a recycled pid.
func ProcStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); start time is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, fmt.Errorf("pid %d is a zombie", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
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
