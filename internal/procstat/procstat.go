// Package procstat reads /proc/<pid>/stat (proc(5)) for the host and the
// guest agent alike.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Stat is the part of /proc/<pid>/stat libbox uses. Times are in clock
// ticks (USER_HZ, 100 on Linux).
type Stat struct {
	Pid            int
	State          byte // R, S, D, Z, X, ...
	Ppid           int
	TtyNr          int
	Flags          uint64
	Utime, Stime   uint64
	Cutime, Cstime uint64 // reaped children
	StartTicks     uint64 // since boot
	RSSPages       int64
}

// PFKthread marks kernel threads in Stat.Flags.
const PFKthread = 0x00200000

// Read returns pid's stat line from /proc, parsed.
func Read(pid int) (Stat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	return Parse(pid, data)
}

// Parse parses a stat line. The command name (field 2) may hold spaces
// and parentheses, so fields are counted from its last ')'.
func Parse(pid int, data []byte) (Stat, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(data[i+1:])) // f[0] is field 3 (state)
	if len(f) < 22 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("/proc/%d/stat: malformed (%d fields)", pid, len(f))
	}
	num := func(k int) uint64 { n, _ := strconv.ParseUint(f[k-3], 10, 64); return n }
	inum := func(k int) int64 { n, _ := strconv.ParseInt(f[k-3], 10, 64); return n }
	return Stat{
		Pid: pid, State: f[0][0], Ppid: int(inum(4)), TtyNr: int(inum(7)), Flags: num(9),
		Utime: num(14), Stime: num(15), Cutime: num(16), Cstime: num(17),
		StartTicks: num(22), RSSPages: inum(24),
	}, nil
}
