// Package launch starts host helper processes (sandbox agents, QEMU) from
// one goroutine locked to its own OS thread that never exits.
//
// Pdeathsig is tied to the thread that forked the child, not the process:
// forking from a caller's thread (a Python or Node thread that calls into
// libbox and may exit later) would kill the child with that thread. This
// package must never be used for short-lived commands whose exit status is
// needed through os/exec's Wait on the same thread.
package launch

import (
	"runtime"
	"sync"
	"syscall"
)

type job struct {
	argv0 string
	argv  []string
	attr  *syscall.ProcAttr
	done  chan result
}

type result struct {
	pid int
	err error
}

var (
	once sync.Once
	jobs chan job
)

func loop() {
	runtime.LockOSThread() // never unlocked: this thread lives as long as the process
	for j := range jobs {
		pid, err := syscall.ForkExec(j.argv0, j.argv, j.attr)
		j.done <- result{pid, err}
	}
}

// ForkExec runs syscall.ForkExec on the launcher thread.
func ForkExec(argv0 string, argv []string, attr *syscall.ProcAttr) (int, error) {
	once.Do(func() {
		jobs = make(chan job)
		go loop()
	})
	j := job{argv0: argv0, argv: argv, attr: attr, done: make(chan result, 1)}
	jobs <- j
	r := <-j.done
	return r.pid, r.err
}
