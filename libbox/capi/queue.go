package main

// Event queues (box_queue_*, box_exec_queued): the polled alternative to
// exec callbacks. Event data and strings are copied into one C buffer per
// queue, valid until the queue's next poll or its close.

/*
#include "capi.h"
*/
import "C"

import (
	"sync"
	"unsafe"

	"github.com/libbox/libbox/libbox/bridge"
)

// arena is a queue's C buffer for the data of the last poll.
type arena struct {
	p   unsafe.Pointer // C memory, or nil
	cap int
}

var (
	arenasMu sync.Mutex
	// arenas holds each open queue's buffer by handle. Guarded by arenasMu.
	arenas = map[uint64]*arena{}
)

// bytes returns a C buffer of at least n bytes (n > 0), growing it.
func (a *arena) bytes(n int) unsafe.Pointer {
	if n > a.cap {
		c := max(n, 2*a.cap, 4096)
		C.free(a.p)
		a.p = C.malloc(C.size_t(c))
		a.cap = c
	}
	return a.p
}

//export box_queue_open
func box_queue_open(out *C.box_queue_t, fd *C.int32_t, errOut **C.box_error_t) C.box_status_t {
	if out == nil || fd == nil {
		return nullArg("out and fd", errOut)
	}
	h, rfd, err := bridge.QueueOpen()
	if err == nil {
		arenasMu.Lock()
		arenas[h] = &arena{}
		arenasMu.Unlock()
		*out, *fd = C.box_queue_t(h), C.int32_t(rfd)
	}
	return setErr(err, errOut)
}

//export box_queue_close
func box_queue_close(q C.box_queue_t, errOut **C.box_error_t) C.box_status_t {
	err := bridge.QueueClose(uint64(q))
	if err == nil {
		arenasMu.Lock()
		if a := arenas[uint64(q)]; a != nil {
			C.free(a.p)
			delete(arenas, uint64(q))
		}
		arenasMu.Unlock()
	}
	return setErr(err, errOut)
}

//export box_queue_poll
func box_queue_poll(q C.box_queue_t, events *C.box_event_t, capacity C.size_t, count *C.size_t, errOut **C.box_error_t) C.box_status_t {
	if events == nil || count == nil {
		return nullArg("events and count", errOut)
	}
	*count = 0
	arenasMu.Lock()
	a := arenas[uint64(q)]
	arenasMu.Unlock()
	err := bridge.QueuePoll(uint64(q), int(min(capacity, 1<<20)), func(batch []bridge.Event) {
		size := 0
		for i := range batch {
			e := &batch[i]
			size += len(e.Data)
			if e.Kind == bridge.EventExit {
				size += len(e.Exit.Message) + len(e.Exit.Reason) + 2
			}
		}
		var buf []byte
		if size > 0 {
			buf = unsafe.Slice((*byte)(a.bytes(size)), size)
		}
		off := 0
		// put copies s into buf and returns its C address.
		put := func(s []byte) unsafe.Pointer {
			p := unsafe.Pointer(&buf[off])
			off += copy(buf[off:], s)
			return p
		}
		cstr := func(s string) *C.char {
			p := put([]byte(s))
			buf[off] = 0
			off++
			return (*C.char)(p)
		}
		evs := unsafe.Slice(events, len(batch))
		for i := range batch {
			e, ce := &batch[i], &evs[i]
			*ce = C.box_event_t{tag: C.uint64_t(e.Tag), kind: C.int32_t(e.Kind)}
			switch e.Kind {
			case bridge.EventExit:
				x := e.Exit
				ce.exit = C.box_exit_t{status: C.box_status_t(x.Status), exit_code: C.int32_t(x.ExitCode),
					signal: C.int32_t(x.Signal), duration_us: C.int64_t(x.Duration.Microseconds())}
				if x.Status != 0 {
					ce.exit.message = cstr(x.Message)
				}
				if x.Reason != "" {
					ce.exit.reason = cstr(x.Reason)
				}
			default:
				if len(e.Data) > 0 {
					ce.data = (*C.uint8_t)(put(e.Data))
				}
				ce.len = C.size_t(len(e.Data))
			}
		}
		*count = C.size_t(len(batch))
	})
	return setErr(err, errOut)
}

//export box_exec_queued
func box_exec_queued(box C.box_t, req *C.char, q C.box_queue_t, tag C.uint64_t, flags C.uint32_t, out *C.box_exec_t, errOut **C.box_error_t) C.box_status_t {
	if req == nil {
		return nullArg("request_json", errOut)
	}
	if out == nil {
		return nullArg("out", errOut)
	}
	h, err := bridge.ExecQueued(uint64(box), C.GoString(req), uint64(q), uint64(tag),
		flags&C.BOX_EXEC_DISCARD_STDOUT != 0, flags&C.BOX_EXEC_DISCARD_STDERR != 0, flags&C.BOX_EXEC_RELEASE_ON_EXIT != 0)
	if err == nil {
		*out = C.box_exec_t(h)
	}
	return setErr(err, errOut)
}
