package agent

import (
	"os"
	"strconv"
	"time"

	"github.com/libbox/libbox/internal/procstat"
)

// TimerSlack is the timer slack of the agent's own threads.
//
// The Go runtime's monitor thread sleeps 20 µs at a time while any of the
// agent's goroutines runs or sits in a system call, and an exec keeps the
// agent busy for a millisecond or two (most of it the spawn thread waiting
// in vfork for the child to exec). At the kernel's usual 50 µs slack that
// was a score of wake-ups per exec, a quarter of the agent's CPU time per
// exec. With a coarser slack each of those sleeps lasts about this long.
// Nothing in the agent needs timers finer than a millisecond.
//
// Box processes keep the slack the agent was started with: the spawn thread
// sets its own back (spawner.restoreTimerSlack), and children inherit it.
const TimerSlack = 500 * time.Microsecond

// MonitorSlack is the timer slack of the runtime's monitor thread alone.
//
// At TimerSlack the monitor still woke eight to ten times per exec, a
// tenth of the agent's CPU time per exec. Its work does not need the
// precision: it takes the processor of a goroutine blocked in a system
// call away when others wait for it (none of the exec path's calls block
// for long), preempts goroutines that ran for 10 ms, and polls the network
// when nobody did for 10 ms; and it backs off to 10 ms sleeps by itself
// whenever it finds nothing to do. The agent's other threads keep
// TimerSlack: their timers are the process's (deadlines, Run's hold).
const MonitorSlack = 5 * time.Millisecond

// SetTimerSlack sets the timer slack of every thread of this process to
// slack; threads created later inherit it from the thread that creates
// them. Call it before New: the spawn thread resets its own slack when it
// starts, and one started earlier would lose that. Writing another
// thread's slack needs CAP_SYS_NICE (an agent has it: root of its box).
func SetTimerSlack(slack time.Duration) error {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, e := range ents {
		// /proc/<tid> names any thread of the process's pid namespace.
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if err := procstat.SetThreadSlack(tid, slack); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// SetMonitorSlack sets the timer slack of the runtime's monitor thread (see
// MonitorSlack); call it after SetTimerSlack. Like that one, it needs
// CAP_SYS_NICE.
func SetMonitorSlack(slack time.Duration) error {
	tid, err := procstat.MonitorThread(os.Getpid())
	if err != nil {
		return err
	}
	return procstat.SetThreadSlack(tid, slack)
}
