package procstat

import (
	"errors"
	"os"
	"strconv"
	"time"
)

// SetThreadSlack sets the timer slack of thread tid (an id of this
// process's pid namespace). Another thread's needs CAP_SYS_NICE.
func SetThreadSlack(tid int, slack time.Duration) error {
	return os.WriteFile("/proc/"+strconv.Itoa(tid)+"/timerslack_ns", []byte(strconv.FormatInt(slack.Nanoseconds(), 10)), 0)
}

// MonitorThread returns the thread id of the Go runtime's monitor thread
// (sysmon), given first, the thread the runtime started on (the process in
// a Go program; in a library loaded by another program, the thread its
// package initialization runs on). The runtime starts the monitor from
// that thread before anything else, and thread ids are handed out in
// increasing order, so it is the lowest id above first. (Were the ids to
// wrap around in between, another thread would be returned.)
func MonitorThread(first int) (int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0, err
	}
	mon := 0
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil && tid > first && (mon == 0 || tid < mon) {
			mon = tid
		}
	}
	if mon == 0 {
		return 0, errors.New("no thread started after the runtime's first")
	}
	return mon, nil
}
