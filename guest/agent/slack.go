package agent

import (
	"os"
	"strconv"
	"time"
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
	val := []byte(strconv.FormatInt(slack.Nanoseconds(), 10))
	for _, e := range ents {
		// /proc/<tid> names any thread of the process's pid namespace.
		if err := os.WriteFile("/proc/"+e.Name()+"/timerslack_ns", val, 0); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}
