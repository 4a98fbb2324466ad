package agent

import (
	"runtime/debug"
	"sync"
	"time"
)

// idleTrim is how long the agent must have no process running before it
// returns its free memory to the box (a GC and a scavenge, a millisecond or
// two). A box mostly waits between bursts of execs; its agent should not
// keep the high-water mark of the last burst.
const idleTrim = time.Second

// trimmer returns free memory after each burst of execs. Its timer's
// callback is the only goroutine it starts; stop waits for it.
type trimmer struct {
	running func() int

	mu      sync.Mutex
	t       *time.Timer // guarded by mu
	stopped bool        // guarded by mu
	wg      sync.WaitGroup
}

// execEnded (re)arms the trim once nothing runs.
func (tr *trimmer) execEnded() {
	if tr.running() > 0 {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.stopped {
		return
	}
	if tr.t != nil {
		if tr.t.Stop() {
			tr.wg.Done() // the pending callback will not run
		}
	}
	tr.wg.Add(1)
	tr.t = time.AfterFunc(idleTrim, func() {
		defer tr.wg.Done()
		if tr.running() == 0 {
			debug.FreeOSMemory()
		}
	})
}

// stop cancels a pending trim and waits for one that is running.
func (tr *trimmer) stop() {
	tr.mu.Lock()
	tr.stopped = true
	if tr.t != nil && tr.t.Stop() {
		tr.wg.Done()
	}
	tr.mu.Unlock()
	tr.wg.Wait()
}
