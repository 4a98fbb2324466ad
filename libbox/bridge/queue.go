package bridge

// Event queues: exec events (output, exit) collected for the caller to take
// in batches, instead of one callback into the caller per event. The queue
// signals a pipe when it goes from empty to non-empty; an event loop watches
// the pipe's read end and drains many events with one Poll.
//
// The rule the locks enforce: every event of a queue is appended and taken
// under Queue.mu, so the pipe holds one byte exactly while the queue holds
// events that no Poll has seen since the byte was written (signalled), and
// an exec's events are taken in the order they were appended (its output,
// then its exit). A producer never waits for the consumer except while its
// own exec has QueueLimit bytes of output untaken; that wait ends when a
// Poll takes them, the queue closes, or the exec's runtime closes.

import (
	"bytes"
	"context"
	"errors"
	"os"
	"sync"
	"syscall"

	"github.com/libbox/libbox/errdefs"
)

// EventKind says what an Event carries.
type EventKind int32

// Event kinds (BOX_EVENT_* in include/libbox.h).
const (
	EventStdout EventKind = 1
	EventStderr EventKind = 2
	EventExit   EventKind = 3
)

// QueueLimit is how many bytes of one exec's output may wait in a queue
// before the exec's output waits for a Poll (backpressure on the box).
const QueueLimit = 1 << 20

// Event is one exec event taken from a queue.
type Event struct {
	Tag  uint64 // the tag given to ExecQueued
	Kind EventKind
	Data []byte   // EventStdout, EventStderr: the bytes (owned by the taker)
	Exit ExitInfo // EventExit
	src  *queuedExec
}

// Queue is an event queue and its pipe.
type Queue struct {
	rfd, wfd int

	mu   sync.Mutex
	cond sync.Cond // L is &mu; broadcast when output is taken or the queue closes
	// events are the events not taken yet, oldest first. Guarded by mu.
	events []Event
	// signalled is true while the pipe holds its byte. Guarded by mu.
	signalled bool
	// closed is set by Close: later events are dropped. Guarded by mu.
	closed bool
}

// queuedExec is the producer side of one exec delivering to a queue.
type queuedExec struct {
	q   *Queue
	tag uint64
	rt  context.Context // the runtime's: a closing runtime ends any wait
	// release: the poll taking the exit releases the exec handle.
	release bool
	// pending is the exec's output bytes in q.events. Guarded by q.mu.
	pending int
	// h is the exec handle once ExecQueued has it. Guarded by q.mu.
	h uint64
	// exitTaken is set when a poll took the exit before h was known.
	// Guarded by q.mu.
	exitTaken bool
}

// QueueOpen makes a queue; it returns its handle and the read end of its
// pipe (readable while events wait).
func QueueOpen() (uint64, int, error) {
	launch.once.Do(launch.init) // its pipe lives as long as the process: open it with the first queue
	var p [2]int
	syscall.ForkLock.RLock() // no child may inherit the pipe before CloseOnExec
	err := syscall.Pipe(p[:])
	if err == nil {
		syscall.CloseOnExec(p[0])
		syscall.CloseOnExec(p[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return 0, -1, fail(errdefs.Internal, "event queue: pipe: %v", err)
	}
	for _, fd := range p {
		if err := syscall.SetNonblock(fd, true); err != nil {
			syscall.Close(p[0])
			syscall.Close(p[1])
			return 0, -1, fail(errdefs.Internal, "event queue: %v", err)
		}
	}
	q := &Queue{rfd: p[0], wfd: p[1]}
	q.cond.L = &q.mu
	return add(&entry{kind: kindQueue, queue: q}), q.rfd, nil
}

func queueOf(h uint64) (*Queue, error) {
	e, err := lookup(h, kindQueue)
	if err != nil {
		return nil, err
	}
	return e.queue, nil
}

// QueuePoll takes up to max events (oldest first) and hands them to take,
// which runs under the queue's lock and must copy what it keeps before
// returning. It never blocks on the producers. The pipe stays readable
// while events remain.
func QueuePoll(h uint64, max int, take func([]Event)) error {
	q, err := queueOf(h)
	if err != nil {
		return err
	}
	if max <= 0 {
		return fail(errdefs.InvalidArgument, "event queue: capacity must be at least 1")
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return fail(errdefs.InvalidArgument, "event queue %d is closed", h)
	}
	n := min(max, len(q.events))
	batch := q.events[:n]
	for i := range batch {
		x := batch[i].src
		switch {
		case batch[i].Kind != EventExit:
			x.pending -= len(batch[i].Data)
		case x.release && x.h != 0:
			Release(x.h)
		case x.release:
			x.exitTaken = true
		}
	}
	take(batch)
	rest := copy(q.events, q.events[n:])
	clear(q.events[rest:])
	q.events = q.events[:rest]
	if rest == 0 && q.signalled {
		var b [8]byte
		syscall.Read(q.rfd, b[:]) // the one byte: the queue is empty now
		q.signalled = false
	}
	q.cond.Broadcast() // producers waiting for room look again
	return nil
}

// QueueClose drops the queue's events, ends any producer's wait and closes
// the pipe. Events of execs still running are dropped from then on.
func QueueClose(h uint64) error {
	e, err := remove(h, kindQueue)
	if err != nil {
		return err
	}
	q := e.queue
	q.mu.Lock()
	q.closed = true
	q.events = nil
	q.cond.Broadcast()
	q.mu.Unlock()
	syscall.Close(q.rfd)
	syscall.Close(q.wfd)
	return nil
}

// push appends ev (mu held) and signals the pipe when it is the first
// event since the last Poll emptied the queue.
func (q *Queue) push(ev Event) {
	q.events = append(q.events, ev)
	if !q.signalled {
		q.signalled = true
		syscall.Write(q.wfd, []byte{1}) // never blocks: at most one byte is in the pipe
	}
}

func (x *queuedExec) output(kind EventKind, b []byte) {
	q := x.q
	q.mu.Lock()
	defer q.mu.Unlock()
	for x.pending >= QueueLimit && !q.closed && x.rt.Err() == nil {
		stop := context.AfterFunc(x.rt, func() {
			q.mu.Lock()
			q.cond.Broadcast()
			q.mu.Unlock()
		})
		q.cond.Wait()
		stop()
	}
	if q.closed {
		return
	}
	x.pending += len(b)
	q.push(Event{Tag: x.tag, Kind: kind, Data: bytes.Clone(b), src: x})
}

func (x *queuedExec) exit(info ExitInfo) {
	q := x.q
	q.mu.Lock()
	if !q.closed {
		q.push(Event{Tag: x.tag, Kind: EventExit, Exit: info, src: x})
	}
	q.mu.Unlock()
}

// ExecQueued starts a command as Exec does, delivering its output (except
// a discarded stream's) and its exit to the queue qh as events carrying tag.
// With release, the poll that takes the exit releases the exec handle (at
// once, when that poll came before this call returned).
func ExecQueued(boxH uint64, reqJSON string, qh uint64, tag uint64, discardStdout, discardStderr, release bool) (uint64, error) {
	q, err := queueOf(qh)
	if err != nil {
		return 0, err
	}
	e, err := lookup(boxH, kindBox)
	if err != nil {
		return 0, err
	}
	x := &queuedExec{q: q, tag: tag, rt: e.rt.ctx, release: release}
	cbs := ExecCallbacks{Exit: x.exit}
	if !discardStdout {
		cbs.Stdout = func(b []byte) { x.output(EventStdout, b) }
	}
	if !discardStderr {
		cbs.Stderr = func(b []byte) { x.output(EventStderr, b) }
	}
	h, err := execWith(boxH, reqJSON, cbs, launch.start)
	if err == nil && release {
		q.mu.Lock()
		if x.exitTaken {
			Release(h)
		} else {
			x.h = h
		}
		q.mu.Unlock()
	}
	return h, err
}

// launcher starts goroutines for calls made on threads that are not Go's
// (an event loop calling box_exec_queued). A goroutine started with `go` on
// such a call would sit on the caller's P while the caller went back to its
// own work with that P (a cgo return keeps it), until the runtime's monitor
// took the P back, a handoff per exec. Instead, the call appends the
// function and writes the launcher's pipe, and a goroutine the netpoller
// wakes on any Go thread starts it: the caller's P is left with nothing to
// run.
type launcher struct {
	once sync.Once
	r    *os.File // read end, in the netpoller
	wfd  int
	err  error

	mu sync.Mutex
	// fns wait to be started. Guarded by mu.
	fns []func()
	// signalled is true while the pipe holds its byte. Guarded by mu.
	signalled bool
}

var launch launcher

func (l *launcher) init() {
	var p [2]int
	syscall.ForkLock.RLock()
	l.err = syscall.Pipe(p[:])
	if l.err == nil {
		syscall.CloseOnExec(p[0])
		syscall.CloseOnExec(p[1])
	}
	syscall.ForkLock.RUnlock()
	if l.err != nil {
		return
	}
	syscall.SetNonblock(p[0], true)
	syscall.SetNonblock(p[1], true)
	l.r, l.wfd = os.NewFile(uintptr(p[0]), "libbox-launcher"), p[1]
	go l.loop() // lives as long as the process: the library is never unloaded
}

// start runs f on a new goroutine, started from the launcher's.
func (l *launcher) start(f func()) {
	l.once.Do(l.init)
	if l.err != nil {
		go f()
		return
	}
	l.mu.Lock()
	l.fns = append(l.fns, f)
	if !l.signalled {
		l.signalled = true
		syscall.Write(l.wfd, []byte{1})
	}
	l.mu.Unlock()
}

func (l *launcher) loop() {
	var b [64]byte
	for {
		if _, err := l.r.Read(b[:]); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		l.mu.Lock()
		fns := l.fns
		l.fns = nil
		l.signalled = false
		l.mu.Unlock()
		for _, f := range fns {
			go f()
		}
	}
}
