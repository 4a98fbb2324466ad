package bridge

// The handle table: every live runtime, box and exec handle, its kind and
// the runtime it came from. Handles are never reused; 0 is never valid.

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox"
)

type kind int

const (
	kindRuntime kind = iota + 1
	kindBox
	kindExec
	kindPull
	kindWatch
	kindQueue
)

func (k kind) String() string {
	return [...]string{"", "runtime", "box", "exec", "pull", "watch", "queue"}[k]
}

type entry struct {
	kind  kind
	rt    *runtimeEntry // owning runtime
	box   *libbox.Box   // kindBox
	exec  *execEntry    // kindExec
	queue *Queue        // kindQueue
	// cancel stops the pull of a kindPull handle and ends a kindWatch.
	cancel context.CancelFunc
}

type runtimeEntry struct {
	rt *libbox.Runtime
	// ops tracks asynchronous calls in flight on this runtime.
	ops sync.WaitGroup
	// ctx is cancelled by close: every exec of this runtime is killed.
	ctx    context.Context
	cancel context.CancelFunc
}

var (
	mu sync.Mutex
	// handles is the table of every live handle. Guarded by mu.
	handles = map[uint64]*entry{}
	next    atomic.Uint64
)

func add(e *entry) uint64 {
	h := next.Add(1)
	mu.Lock()
	handles[h] = e
	mu.Unlock()
	return h
}

func lookup(h uint64, k kind) (*entry, error) {
	mu.Lock()
	e, ok := handles[h]
	mu.Unlock()
	if !ok {
		if h == 0 {
			return nil, fail(errdefs.InvalidArgument, "%s handle is 0 (null)", k)
		}
		return nil, fail(errdefs.InvalidArgument, "unknown or released handle %d", h)
	}
	if e.kind != k {
		return nil, fail(errdefs.InvalidArgument, "handle %d is a %s handle, not a %s handle", h, e.kind, k)
	}
	return e, nil
}

// remove takes handle h of kind k out of the table (closing it).
func remove(h uint64, k kind) (*entry, error) {
	mu.Lock()
	defer mu.Unlock()
	e, ok := handles[h]
	if !ok {
		return nil, fail(errdefs.InvalidArgument, "unknown or released %s handle %d", k, h)
	}
	if e.kind != k {
		return nil, fail(errdefs.InvalidArgument, "handle %d is a %s handle, not a %s handle", h, e.kind, k)
	}
	delete(handles, h)
	return e, nil
}

// LiveHandles counts live handles of every kind.
func LiveHandles() int64 {
	mu.Lock()
	defer mu.Unlock()
	return int64(len(handles))
}

// Release drops a box or exec handle.
func Release(h uint64) error {
	mu.Lock()
	defer mu.Unlock()
	e, ok := handles[h]
	if !ok {
		return fail(errdefs.InvalidArgument, "unknown or released handle %d", h)
	}
	if e.kind == kindRuntime {
		return fail(errdefs.InvalidArgument, "handle %d is a runtime: close it with box_runtime_close", h)
	}
	if e.kind == kindQueue {
		return fail(errdefs.InvalidArgument, "handle %d is an event queue: close it with box_queue_close", h)
	}
	delete(handles, h)
	return nil
}
