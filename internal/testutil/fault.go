package testutil

import (
	"encoding/json"
	"os"
	"testing"
	"time"
)

// FaultLogEnv names the file that fault-table tests append their measured
// settle times to (one JSON object a line: row, case, settle_ms);
// tools/faulttable renders docs/reliability.md from it. ./build.sh test
// sets it; unset, FaultRow only logs.
const FaultLogEnv = "LIBBOX_FAULT_LOG"

// FaultRow records one measured row of the fault table.
func FaultRow(t testing.TB, row int, what string, settle time.Duration) {
	t.Helper()
	t.Logf("FAULT-ROW %d | %s | %s", row, what, settle.Round(100*time.Microsecond))
	p := os.Getenv(FaultLogEnv)
	if p == "" {
		return
	}
	line, _ := json.Marshal(map[string]any{"row": row, "case": what, "settle_ms": float64(settle.Microseconds()) / 1000})
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Errorf("fault log: %v", err)
		return
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		t.Errorf("fault log: %v", err)
	}
}
