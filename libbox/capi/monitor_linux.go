package main

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/internal/procstat"
)

// monitorSlack is the timer slack of the Go runtime's monitor thread
// (sysmon) in libbox.so; every other thread keeps the slack it inherits.
//
// A thread that has called into the library keeps a Go processor (P) when
// it returns to its caller, so the monitor never backs off into its long
// sleeps: it polls every 20 µs and takes that P back, a score of wakes per
// exec, half of a C or Python caller's host CPU per exec. Its work (taking
// back a P held in a system call or by a caller, preempting a goroutine
// that ran 10 ms, polling the network when nobody did for 10 ms) needs no
// finer timing, and a goroutine made runnable meanwhile is still run by an
// idle thread the runtime wakes for it. The guest agent does the same
// (guest/agent.MonitorSlack).
//
// Setting another thread's slack needs CAP_SYS_NICE: without it (a caller
// that is not root) the library only costs more CPU per exec. Threads the
// monitor starts inherit the coarse slack; processes are started from the
// launcher thread (libbox/internal/launch), which keeps the caller's.
const monitorSlack = 5 * time.Millisecond

// Package initialization runs on the thread the runtime started on.
func init() {
	if tid, err := procstat.MonitorThread(unix.Gettid()); err == nil {
		_ = procstat.SetThreadSlack(tid, monitorSlack)
	}
}
