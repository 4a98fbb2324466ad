package bridge

// Execs: the state of one exec (its process once spawned, its control) and
// the calls on an exec handle. Exit is reported exactly once per accepted
// Exec, after every output callback.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync/atomic"
	"syscall"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox"
)

// execEntry is one exec: the process once spawned, and its control.
type execEntry struct {
	ready  chan struct{} // closed once proc is set or the spawn failed
	proc   *libbox.Process
	cancel context.CancelFunc
	ended  atomic.Bool
	// stdinClosed is set by CloseStdin: a later write is refused as such,
	// whether or not the process has exited meanwhile.
	stdinClosed atomic.Bool
}

// Exec starts a command asynchronously. Callbacks come from goroutines of
// the bridge: output in order, then exactly one Exit.
func Exec(boxH uint64, reqJSON string, cbs ExecCallbacks) (uint64, error) {
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
	re := e.rt
	ctx, cancel := context.WithCancel(re.ctx)
	ee := &execEntry{ready: make(chan struct{}), cancel: cancel}
	h := add(&entry{kind: kindExec, rt: re, exec: ee})
	re.ops.Add(1)
	go func() {
		defer re.ops.Done()
		defer cancel()
		info := ExitInfo{ExitCode: -1}
		p, err := e.box.Exec(ctx, cmd)
		if err == nil {
			ee.proc = p
			close(ee.ready)
			st, werr := p.Wait(context.Background())
			info = ExitInfo{ExitCode: int32(st.ExitCode), Signal: int32(st.Signal), Duration: st.Duration}
			err = werr
		} else {
			close(ee.ready)
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
	}()
	return h, nil
}

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
	<-e.exec.ready
	if e.exec.proc == nil {
		return nil, fail(errdefs.FailedPrecondition, "exec %d did not start (see its on_exit)", h)
	}
	return e.exec, nil
}

// WriteStdin feeds the exec's stdin; it may block (flow control).
func WriteStdin(h uint64, data []byte) error {
	ee, err := execOf(h)
	if err != nil {
		return err
	}
	if len(data) == 0 {
		return nil
	}
	if ee.stdinClosed.Load() {
		return fail(errdefs.FailedPrecondition, "exec %d: stdin is closed (box_exec_close_stdin)", h)
	}
	if ee.ended.Load() {
		return fail(errdefs.FailedPrecondition, "exec %d has exited: cannot write stdin", h)
	}
	_, err = ee.proc.Write(bytes.Clone(data))
	return err
}

// CloseStdin closes the exec's stdin.
func CloseStdin(h uint64) error {
	ee, err := execOf(h)
	if err != nil {
		return err
	}
	ee.stdinClosed.Store(true)
	return ee.proc.CloseStdin()
}

// Signal signals the exec's process group.
func Signal(h uint64, sig int32) error {
	ee, err := execOf(h)
	if err != nil {
		return err
	}
	if ee.ended.Load() {
		return fail(errdefs.FailedPrecondition, "exec %d has exited: cannot signal", h)
	}
	return ee.proc.Signal(syscall.Signal(sig))
}

// Resize resizes the exec's terminal.
func Resize(h uint64, rows, cols uint32) error {
	ee, err := execOf(h)
	if err != nil {
		return err
	}
	return ee.proc.Resize(rows, cols)
}

// Cancel kills the exec's process group (on_exit reports Canceled).
func Cancel(h uint64) error {
	e, err := lookup(h, kindExec)
	if err != nil {
		return err
	}
	ee := e.exec
	select {
	case <-ee.ready:
		if ee.proc != nil {
			ee.proc.Cancel()
		}
	default:
		ee.cancel() // not spawned yet: the spawn is abandoned
	}
	return nil
}
