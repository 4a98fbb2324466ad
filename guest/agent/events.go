package agent

import (
	"sync"

	"github.com/libbox/libbox/guest/agentpb"
)

// events carries one exec's events to the host: one message per event on
// an Exec stream, or packed into ExecEvents messages on a Run stream.
//
// On a Run stream events may be held, to leave in one message: from the
// spawn until the hold ends (ExecStart.hold_us, or held output filling a
// chunk), and again once the process has exited, so that output drained
// after the exit travels with the Exit. Order is kept: an event is either
// appended behind the held ones or, when nothing is held, sent at once,
// under mu in both cases.
type events struct {
	one   func(*agentpb.ExecEvent) error  // an Exec stream's Send
	batch func(*agentpb.ExecEvents) error // a Run stream's Send

	// mu serializes sends and guards the fields below.
	mu sync.Mutex
	// holding: new events are held instead of sent. Guarded by mu.
	holding bool
	// held are the events not sent yet, in order. Guarded by mu.
	held []*agentpb.ExecEvent
	// heldBytes is the output data in held. Guarded by mu.
	heldBytes int
}

// send delivers ev, or holds it. Adjacent output of one stream is merged
// while held (fewer events for the host to deliver).
func (e *events) send(ev *agentpb.ExecEvent) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.batch == nil {
		return e.one(ev)
	}
	if !e.holding {
		return e.batch(&agentpb.ExecEvents{Events: []*agentpb.ExecEvent{ev}})
	}
	if o := ev.GetOutput(); o != nil {
		e.heldBytes += len(o.Data)
		if n := len(e.held); n > 0 {
			if last := e.held[n-1].GetOutput(); last != nil && last.Stream == o.Stream && len(last.Data)+len(o.Data) <= chunkSize {
				last.Data = append(last.Data, o.Data...)
				return nil
			}
		}
	}
	e.held = append(e.held, ev)
	if e.heldBytes >= chunkSize {
		return e.flushLocked()
	}
	return nil
}

// hold makes later events wait for release or last (Run streams only).
func (e *events) hold() {
	e.mu.Lock()
	e.holding = e.batch != nil
	e.mu.Unlock()
}

// release sends what is held and stops holding.
func (e *events) release() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.holding = false
	return e.flushLocked()
}

// last sends the terminal event with everything still held.
func (e *events) last(ev *agentpb.ExecEvent) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.batch == nil {
		return e.one(ev)
	}
	e.held = append(e.held, ev)
	e.holding = false
	return e.flushLocked()
}

func (e *events) flushLocked() error {
	if len(e.held) == 0 {
		return nil
	}
	msg := &agentpb.ExecEvents{Events: e.held}
	e.held, e.heldBytes = nil, 0
	return e.batch(msg)
}
