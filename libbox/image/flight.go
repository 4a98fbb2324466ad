package image

import (
	"context"
	"sync"
)

// flights runs one piece of work per key at a time and shares its result
// with every caller that asks for the same key meanwhile. The work runs on a
// goroutine owned by the store (waited for by Close) with a context that is
// cancelled when the store closes or when every caller has given up, so one
// impatient caller never cancels the others' pull.
type flights struct {
	base context.Context // cancelled by Close
	wg   *sync.WaitGroup

	mu sync.Mutex
	// m holds the running flights; guarded by mu.
	m map[string]*flight
}

type flight struct {
	done   chan struct{}
	val    any
	err    error
	cancel context.CancelFunc

	// waiters is guarded by flights.mu.
	waiters int

	// cbMu is held for reading while progress callbacks run and for writing
	// while a caller unsubscribes, so no callback runs after its caller left.
	cbMu sync.RWMutex
	// progress holds the subscribed callbacks by caller; guarded by cbMu.
	progress map[int]func(Progress)
	nextCB   int // guarded by cbMu
}

// do runs fn once for key (joining a running flight if there is one) and
// waits for its result or for ctx. progress, if not nil, receives the
// flight's progress events from the moment the caller joins.
func (g *flights) do(ctx context.Context, key string, progress func(Progress),
	fn func(ctx context.Context, report func(Progress)) (any, error)) (any, error) {
	g.mu.Lock()
	f, ok := g.m[key]
	if !ok {
		fctx, cancel := context.WithCancel(g.base)
		f = &flight{done: make(chan struct{}), cancel: cancel, progress: map[int]func(Progress){}}
		g.m[key] = f
		report := func(p Progress) {
			f.cbMu.RLock()
			defer f.cbMu.RUnlock()
			for _, fn := range f.progress {
				fn(p)
			}
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer cancel()
			f.val, f.err = fn(fctx, report)
			g.mu.Lock()
			if g.m[key] == f {
				delete(g.m, key)
			}
			g.mu.Unlock()
			close(f.done)
		}()
	}
	f.waiters++
	g.mu.Unlock()
	f.cbMu.Lock()
	id := f.nextCB
	f.nextCB++
	if progress != nil {
		f.progress[id] = progress
	}
	f.cbMu.Unlock()
	defer func() {
		f.cbMu.Lock()
		delete(f.progress, id)
		f.cbMu.Unlock()
	}()

	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		g.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			// Nobody wants the result any more: stop the work, and let the
			// next caller start afresh rather than join a dying flight.
			f.cancel()
			if g.m[key] == f {
				delete(g.m, key)
			}
		}
		g.mu.Unlock()
		return nil, ctx.Err()
	}
}
