package bridge

// Execs: the state of one exec (its process once spawned, its control) and
// the calls on an exec handle. Exit is reported exactly once per accepted
// Exec, after every output callback.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox"
)

// execEntry is one exec: the process once spawned, and its control.
//
// Control calls (signal, resize, close stdin) never wait for the spawn: made
// before the process started, they are queued here and applied, in order,
// as soon as it has (dropped if the spawn fails: on_exit says why).
type execEntry struct {
	ready  chan struct{} // closed once proc is set or the spawn failed
	cancel context.CancelFunc
	ended  atomic.Bool
	// stdinClosed is set by CloseStdin: a later write is refused as such,
	// whether or not the process has exited meanwhile.
	stdinClosed atomic.Bool
	tty         bool // the request asked for a terminal
	stdin       bool // the request asked for open stdin

	mu sync.Mutex
	// proc is the process once spawned. Guarded by mu.
	proc *libbox.Process
	// spawned is set when the spawn finished (proc nil: it failed). Guarded by mu.
	spawned bool
	// pending are control calls made before the spawn finished. Guarded by mu.
	pending []func(*libbox.Process)
}

// control applies f to the process, or queues it until the spawn finished.
func (ee *execEntry) control(h uint64, f func(*libbox.Process) error) error {
	ee.mu.Lock()
	if !ee.spawned {
		ee.pending = append(ee.pending, func(p *libbox.Process) { _ = f(p) })
		ee.mu.Unlock()
		return nil
	}
	p := ee.proc
	ee.mu.Unlock()
	if p == nil {
		return fail(errdefs.FailedPrecondition, "exec %d did not start (see its on_exit)", h)
	}
	return f(p)
}

// started records the end of the spawn and applies the queued control
// before a waiting stdin write may go: a caller that resized the terminal
// (or signalled) and then wrote, all before the spawn finished, sees them
// reach the process in that order.
func (ee *execEntry) started(p *libbox.Process) {
	ee.mu.Lock()
	ee.proc, ee.spawned = p, true
	pending := ee.pending
	ee.pending = nil
	ee.mu.Unlock()
	if p != nil {
		for _, f := range pending {
			f(p)
		}
	}
	close(ee.ready)
}

// Exec starts a command asynchronously. Callbacks come from goroutines of
// the bridge: output in order, then exactly one Exit.
func Exec(boxH uint64, reqJSON string, cbs ExecCallbacks) (uint64, error) {
	return execWith(boxH, reqJSON, cbs, func(f func()) { go f() })
}

// execWith is Exec with the exec's goroutine started by start.
func execWith(boxH uint64, reqJSON string, cbs ExecCallbacks, start func(func())) (uint64, error) {
	e, err := lookup(boxH, kindBox)
	if err != nil {
		return 0, err
	}
	cmd, err := parseExecRequest(reqJSON)
	if err != nil {
		return 0, err
	}
	if !e.box.Running() {
		return 0, fail(errdefs.FailedPrecondition, "box %s is not running: start it first", e.box.ID())
	}
	cmd.Stdout, cmd.Stderr = callbackWriter(cbs.Stdout), callbackWriter(cbs.Stderr)
	if !cmd.OpenStdin && !cmd.TTY {
		// Nothing here needs the pid: a short command's start, output and
		// exit come in one message (and its output in fewer callbacks).
		cmd.Batch = execBatch
	}
	// The writers are the callbacks, which may run on this goroutine
	// before Exec returns: a short command then ends without another.
	cmd.WriteInExec = true
	re := e.rt
	ctx, cancel := context.WithCancel(re.ctx)
	ee := &execEntry{ready: make(chan struct{}), cancel: cancel, tty: cmd.TTY, stdin: cmd.OpenStdin}
	h := add(&entry{kind: kindExec, rt: re, exec: ee})
	re.ops.Add(1)
	start(func() {
		defer re.ops.Done()
		defer cancel()
		info := ExitInfo{ExitCode: -1}
		p, err := e.box.Exec(ctx, cmd)
		ee.started(p)
		if err == nil {
			st, werr := p.Wait(context.Background())
			info = ExitInfo{ExitCode: int32(st.ExitCode), Signal: int32(st.Signal), Duration: st.Duration}
			if st.OOMKilled {
				info.Reason = ReasonOOMKilled
			}
			err = werr
		}
		if err != nil {
			info.Status, info.Message = Status(err)
			var se *libbox.SpawnError
			if errors.As(err, &se) {
				info.Reason = string(se.Reason)
			}
		}
		ee.ended.Store(true)
		if cbs.Exit != nil {
			cbs.Exit(info)
		}
	})
	return h, nil
}

// execBatch is how long an exec without stdin or terminal may have its
// start and first output held to come with its exit (libbox.Command.Batch):
// control made meanwhile is queued, and a long process's first output is
// that much later.
const execBatch = 20 * time.Millisecond

// callbackWriter turns an output callback into an io.Writer (nil: discard).
func callbackWriter(fn func([]byte)) io.Writer {
	if fn == nil {
		return io.Discard
	}
	return writerFunc(fn)
}

type writerFunc func([]byte)

func (f writerFunc) Write(p []byte) (int, error) {
	f(p)
	return len(p), nil
}

func execOf(h uint64) (*execEntry, error) {
	e, err := lookup(h, kindExec)
	if err != nil {
		return nil, err
	}
	return e.exec, nil
}

// WriteStdin feeds the exec's stdin. It may block: until the spawn finished,
// and while the box has no room (flow control); it returns an error once
// the process ended, or its stdin was closed, from whichever thread.
func WriteStdin(h uint64, data []byte) error {
	ee, err := execOf(h)
	if err != nil {
		return err
	}
	if !ee.stdin {
		return fail(errdefs.FailedPrecondition, "exec %d was started without stdin (request \"stdin\": true)", h)
	}
	<-ee.ready
	ee.mu.Lock()
	p := ee.proc
	ee.mu.Unlock()
	if p == nil {
		return fail(errdefs.FailedPrecondition, "exec %d did not start (see its on_exit)", h)
	}
	if len(data) == 0 {
		return nil
	}
	if ee.stdinClosed.Load() {
		return fail(errdefs.FailedPrecondition, "exec %d: stdin is closed (box_exec_close_stdin)", h)
	}
	_, err = p.Write(bytes.Clone(data)) // "closed" or "has exited" errors come from p
	return err
}

// CloseStdin closes the exec's stdin after what was written; never blocks
// on flow control or on the spawn.
func CloseStdin(h uint64) error {
	ee, err := execOf(h)
	if err != nil {
		return err
	}
	ee.stdinClosed.Store(true)
	return ee.control(h, func(p *libbox.Process) error { return p.CloseStdin() })
}

// Signal signals the exec's process group; never blocks on flow control or
// on the spawn.
func Signal(h uint64, sig int32) error {
	ee, err := execOf(h)
	if err != nil {
		return err
	}
	if sig <= 0 || sig > 64 {
		return fail(errdefs.InvalidArgument, "signal %d is not a valid signal number", sig)
	}
	if ee.ended.Load() {
		return fail(errdefs.FailedPrecondition, "exec %d has exited: cannot signal", h)
	}
	return ee.control(h, func(p *libbox.Process) error { return p.Signal(syscall.Signal(sig)) })
}

// Resize resizes the exec's terminal; never blocks on flow control or on
// the spawn. Without a terminal: FailedPrecondition.
func Resize(h uint64, rows, cols uint32) error {
	ee, err := execOf(h)
	if err != nil {
		return err
	}
	if rows == 0 || cols == 0 || rows > 65535 || cols > 65535 {
		return fail(errdefs.InvalidArgument, "terminal size %dx%d: want 1..65535", rows, cols)
	}
	if !ee.tty {
		return fail(errdefs.FailedPrecondition, "exec %d has no terminal (request \"tty\": true to resize)", h)
	}
	return ee.control(h, func(p *libbox.Process) error { return p.Resize(rows, cols) })
}

// Cancel kills the exec's process group (on_exit reports Canceled); never
// blocks.
func Cancel(h uint64) error {
	e, err := lookup(h, kindExec)
	if err != nil {
		return err
	}
	ee := e.exec
	ee.mu.Lock()
	p, spawned := ee.proc, ee.spawned
	ee.mu.Unlock()
	switch {
	case p != nil:
		p.Cancel()
	case !spawned:
		ee.cancel() // not spawned yet: the spawn is abandoned
	}
	return nil
}
