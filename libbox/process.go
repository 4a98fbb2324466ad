package libbox

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/errdefs/errgrpc"
	"github.com/libbox/libbox/guest/agentpb"
)

// Command is one process to run in a box.
type Command struct {
	Args []string // required; Args[0] is looked up in the box's PATH
	Env  []string // KEY=VALUE, after the image's and the box's
	Dir  string   // working directory; default: the box's
	User string   // "name", "uid" or "uid:gid"; default: the image's, else root
	TTY  bool     // run on a pseudo-terminal (Stdout gets both streams)
	Rows uint32   // terminal size when TTY (default 24x80)
	Cols uint32

	// Stdin, when set, is copied to the process and then closed. If the
	// process ends first, a copy blocked in Stdin.Read ends when that Read
	// returns (a pollable *os.File is woken at once). Otherwise,
	// with OpenStdin, the caller feeds it with Process.Write and CloseStdin;
	// with neither, stdin is /dev/null.
	Stdin     io.Reader
	OpenStdin bool

	// Stdout and Stderr receive output in order, from one goroutine per
	// process; nil collects it (Process.Output). A slow writer slows the
	// process (backpressure), it never grows memory.
	Stdout io.Writer
	Stderr io.Writer
	// WriteInExec lets Exec itself write the output that came with the
	// start (see Batch) to Stdout and Stderr before it returns, and end a
	// process whose exit came too without a receiving goroutine. Set it
	// when the writers may be called before Exec returned; by default only
	// the receiving goroutine writes, so a writer may wait for Exec.
	WriteInExec bool

	// Timeout kills the process group after this long; Wait then returns an
	// error of class DeadlineExceeded.
	Timeout time.Duration
	// KeepBackground leaves background children running after the process
	// exits (by default its process group is killed with it).
	KeepBackground bool

	// UseImageCmd runs the image's command as `docker run IMAGE [ARG...]`
	// does: its Entrypoint followed by Args, or by its Cmd when Args is
	// empty.
	UseImageCmd bool

	// Batch lets the box hold the process's start and first output for up
	// to this long after the spawn, to report them together with its exit
	// when it ends by then: one message for a short command instead of
	// three or more. A longer process pays for it: Exec returns, and its
	// first output arrives, up to Batch after the spawn. 0: each is
	// reported as it happens. Run, whose caller sees nothing before the
	// end, batches up to RunBatch when 0. No effect with Stdin or OpenStdin.
	Batch time.Duration
}

// RunBatch is the Batch Run uses when the command sets none. It also bounds
// how long a Run cancelled early waits for nothing: a cancel before the box
// reported the start drops the exec's stream, and the box kills the process
// group when it sees that, without a confirmation Run could wait for.
const RunBatch = 50 * time.Millisecond

// ExitStatus is how a process ended.
type ExitStatus struct {
	ExitCode int           // exit code, or -1 when killed by a signal
	Signal   int           // the killing signal, or 0
	Duration time.Duration // from spawn to exit
	// OOMKilled: the kernel's OOM killer ended the process (Signal is 9)
	// at the box's memory limit. Known for sandbox boxes with a memory
	// limit (see oomCounter); false elsewhere.
	OOMKilled bool
}

// oomCounter is an instance that counts its box's OOM kills (a sandbox
// box's memory cgroup: memory.events or v1 memory.oom_control).
//
// An exec is OOMKilled when its process died of SIGKILL and the count rose
// between its spawn and its exit. The count is per box, not per process:
// a process killed with SIGKILL by someone else (kill -9 from another
// exec) while the OOM killer ended another process of the box is reported
// OOMKilled too, and so are two processes that die of SIGKILL while one
// OOM kill happens. A child of the exec's process killed by the OOM killer
// is not the exec's process: the exec reports how that process ended.
type oomCounter interface{ OOMKills() (int, bool) }

// oomKills is the box's OOM kill count, when its backend counts them and
// the box has a memory limit.
func (b *Box) oomKills() (int, bool) {
	if b.cfg.MemoryMiB == 0 {
		return 0, false
	}
	b.mu.Lock()
	c, ok := b.inst.(oomCounter)
	b.mu.Unlock()
	if !ok {
		return 0, false
	}
	return c.OOMKills()
}

// Process is a running command. Safe for concurrent use.
//
// Control (Signal, Resize, CloseStdin, Cancel) never waits behind stdin or
// output: it is a unary call to the agent keyed by the exec id the agent
// assigned at the start, apart from the stream that carries the data.
type Process struct {
	box    *Box
	pid    int
	execID uint64 // the agent's name for this exec
	client agentpb.AgentClient
	events *execEvents
	stdin  agentpb.Agent_ExecClient // the Exec stream; nil on Run
	cancel context.CancelFunc
	tty    bool

	// sendMu serializes stdin sends on the stream (held while a send waits
	// for flow control; control calls never take it).
	sendMu sync.Mutex

	stdinMu sync.Mutex
	// stdinClosed is set by CloseStdin. Guarded by stdinMu.
	stdinClosed bool
	// stdinSent counts the stdin bytes handed to the stream. Guarded by stdinMu.
	stdinSent uint64
	openStdin bool

	stdout, stderr io.Writer
	outBuf, errBuf *bytes.Buffer // when collecting
	// writeErr is the first error of stdout or stderr (then output is
	// dropped). Used by the receiving goroutine only.
	writeErr error

	// oomBefore is the box's OOM kill count before the spawn, when oomKnown.
	oomBefore int
	oomKnown  bool

	done     chan struct{}
	status   ExitStatus // set before done closes
	err      error      // set before done closes
	canceled sync.Once
	// cancelReason is why the client cancelled (nil: it did not). Set before cancel.
	cancelMu     sync.Mutex
	cancelReason error

	stopWatch func() bool // unregisters the ctx watcher (set right after the start)

	stdinDone   chan struct{} // closed when the Stdin copier ends (nil without one)
	stdinReader io.Reader

	trace ExecTrace // filled in before done closes (see Trace)
}

// Exec starts a command in the running box and returns once it has been
// spawned (or failed to spawn: a missing command is ErrNotFound, a bad
// working dir or user ErrInvalidArgument); with Command.Batch, once it
// ended or Batch after the spawn, whichever comes first. Cancelling ctx at
// any time kills the process group in the box.
func (b *Box) Exec(ctx context.Context, cmd Command) (*Process, error) {
	cmd, err := b.imageCommand(cmd)
	if err != nil {
		return nil, err
	}
	if len(cmd.Args) == 0 || cmd.Args[0] == "" {
		return nil, errdefs.New(errdefs.InvalidArgument, "command is empty: give at least the program to run")
	}
	called := time.Now()
	client, err := b.agentClient()
	if err != nil {
		return nil, err
	}
	start := &agentpb.ExecStart{
		Args:           cmd.Args,
		Env:            append(append([]string{}, b.cfg.Env...), cmd.Env...),
		Dir:            cmd.Dir,
		User:           cmd.User,
		Tty:            cmd.TTY,
		Stdin:          cmd.Stdin != nil || cmd.OpenStdin,
		KeepBackground: cmd.KeepBackground,
	}
	if start.Dir == "" {
		start.Dir = b.cfg.WorkingDir
	}
	if start.User == "" {
		start.User = b.cfg.User
	}
	if cmd.TTY {
		start.TtySize = &agentpb.TtySize{Rows: cmd.Rows, Cols: cmd.Cols}
	}
	if cmd.Timeout < 0 {
		return nil, errdefs.New(errdefs.InvalidArgument, "timeout %s is negative", cmd.Timeout)
	}
	if cmd.Timeout > 0 {
		start.TimeoutMs = max(1, cmd.Timeout.Milliseconds())
	}
	if cmd.Batch < 0 {
		return nil, errdefs.New(errdefs.InvalidArgument, "batch %s is negative", cmd.Batch)
	}
	if cmd.Batch > 0 && !start.Stdin {
		start.HoldUs = max(1, cmd.Batch.Microseconds())
	}
	oomBefore, oomKnown := b.oomKills()
	// The stream outlives ctx: once the process runs, cancelling ctx kills
	// it through the agent and waits for its end (see kill).
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel) // until Started: abandon the spawn
	defer stop()
	events, ev, err := b.startExec(sctx, client, start)
	if err != nil {
		cancel()
		return nil, b.execError(ctx, err)
	}
	if !stop() {
		// ctx ended while spawning: the stream is gone, and with it the process.
		cancel()
		return nil, errdefs.Wrap(errdefs.CodeOf(ctx.Err()), ctx.Err(), "exec in box %s", b.cfg.ID)
	}
	if ex := ev.GetExit(); ex != nil {
		cancel()
		return nil, spawnFailure(ex, start)
	}
	started := ev.GetStarted()
	if started == nil {
		cancel()
		return nil, errdefs.New(errdefs.Internal, "agent protocol: expected started, got %v", ev)
	}
	p := &Process{
		box: b, pid: int(started.Pid), execID: started.ExecId, client: client, events: events, stdin: events.exec, cancel: cancel, tty: cmd.TTY,
		oomBefore: oomBefore, oomKnown: oomKnown,
		openStdin: cmd.OpenStdin && cmd.Stdin == nil,
		stdout:    cmd.Stdout, stderr: cmd.Stderr,
		done:  make(chan struct{}),
		trace: ExecTrace{Call: called, Started: time.Now()},
	}
	if p.stdout == nil {
		p.outBuf = &bytes.Buffer{}
		p.stdout = p.outBuf
	}
	if p.stderr == nil {
		p.errBuf = &bytes.Buffer{}
		p.stderr = p.errBuf
	}
	// A short process's output and exit may have come with its start.
	// Collected output cannot block: deliver it here, and when the exit
	// was among it, the process is done without a goroutine of its own.
	// (A caller's writer may block until Exec returns: it is only written
	// from the receiving goroutine.)
	for (cmd.WriteInExec || p.outBuf != nil && p.errBuf != nil) && events.buffered() {
		ev, err := events.Recv()
		if err == nil && p.handle(ev) {
			p.drain()
			p.finish()
			return p, nil
		}
	}
	b.mu.Lock()
	b.procs[p] = struct{}{}
	b.mu.Unlock()
	if cmd.Stdin != nil {
		p.stdinDone = make(chan struct{})
		p.stdinReader = cmd.Stdin
		go p.copyStdin(cmd.Stdin)
	}
	// Cancelling ctx kills the process group; finish unregisters this.
	p.stopWatch = context.AfterFunc(ctx, func() {
		p.kill(errdefs.Wrap(errdefs.CodeOf(ctx.Err()), ctx.Err(), "process %d", p.pid))
	})
	go p.receive(ctx)
	return p, nil
}

// startExec sends start to the agent and returns the exec's events with
// the first one read. An exec without stdin is one Run call (one message
// each way for a short process); with stdin, or when the agent predates
// Run (a box restored from a memory snapshot of an older libbox, or
// started by one and reattached), it is an Exec stream. An agent without
// Run says so before running anything, so the exec is then retried on
// Exec, and every later exec on that connection uses Exec at once.
func (b *Box) startExec(ctx context.Context, client agentpb.AgentClient, start *agentpb.ExecStart) (*execEvents, *agentpb.ExecEvent, error) {
	if !start.Stdin && b.agentRuns(client) {
		run, err := client.Run(ctx, start, grpc.WaitForReady(false))
		if err != nil {
			return nil, nil, err
		}
		events := &execEvents{run: run}
		ev, err := events.Recv()
		if !errdefs.IsUnsupported(err) {
			return events, ev, err
		}
		b.mu.Lock()
		b.noRun = client
		b.mu.Unlock()
	}
	start.HoldUs = 0
	stream, err := client.Exec(ctx, grpc.WaitForReady(false))
	if err != nil {
		return nil, nil, err
	}
	if err := stream.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Start{Start: start}}); err != nil {
		_, rerr := stream.Recv()
		return nil, nil, rerr
	}
	events := &execEvents{exec: stream}
	ev, err := events.Recv()
	return events, ev, err
}

// agentRuns reports whether the agent behind client may serve Run.
func (b *Box) agentRuns(client agentpb.AgentClient) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.noRun != client
}

// execEvents reads one exec's events one at a time: from an Exec stream
// (one per message) or a Run stream (one or more per message).
type execEvents struct {
	exec agentpb.Agent_ExecClient // one of exec and run is set
	run  agentpb.Agent_RunClient
	// queued are the events of the last Run message not read yet.
	queued []*agentpb.ExecEvent
}

func (s *execEvents) Recv() (*agentpb.ExecEvent, error) {
	if s.exec != nil {
		return s.exec.Recv()
	}
	for len(s.queued) == 0 {
		m, err := s.run.Recv()
		if err != nil {
			return nil, err
		}
		s.queued = m.GetEvents()
	}
	ev := s.queued[0]
	s.queued = s.queued[1:]
	return ev, nil
}

// buffered reports whether events already received wait to be read.
func (s *execEvents) buffered() bool { return len(s.queued) > 0 }

// execError classifies a stream error for the box.
func (b *Box) execError(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return errdefs.New(errdefs.Unavailable, "box %s: the agent closed the connection", b.cfg.ID)
	}
	if ctx.Err() != nil {
		return errdefs.Wrap(errdefs.CodeOf(ctx.Err()), ctx.Err(), "exec in box %s", b.cfg.ID)
	}
	e := errgrpc.FromGRPC(err)
	if errdefs.IsCanceled(e) || errdefs.IsUnavailable(e) || errdefs.CodeOf(e) == errdefs.Internal {
		b.mu.Lock()
		running, stopping := b.inst != nil, b.stopping
		b.mu.Unlock()
		if stopping {
			return b.stoppedError("the exec")
		}
		if !running {
			return errdefs.New(errdefs.Unavailable, "box %s stopped or went away: %v", b.cfg.ID, e)
		}
		if errdefs.IsUnavailable(e) {
			return errdefs.New(errdefs.Unavailable, "box %s: lost the connection to its agent: %v", b.cfg.ID, e)
		}
	}
	return e
}

// stoppedError is the one outcome of an exec the box stopped under (Stop,
// a forced remove, Runtime.Close), whatever the timing: the process was
// running, or being spawned, when the stop began.
func (b *Box) stoppedError(what string) error {
	return errdefs.New(errdefs.Unavailable, "box %s was stopped while %s ran", b.cfg.ID, what)
}

// isStopping reports whether Stop is shutting the box down.
func (b *Box) isStopping() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stopping
}

func exitError(ex *agentpb.Exit) error {
	code := errdefs.ByName(ex.GetCode())
	if ex.GetCode() == "" {
		code = errdefs.Internal
	}
	return errdefs.New(code, "%s", ex.GetError())
}

// receive delivers output in order and records the terminal event.
func (p *Process) receive(ctx context.Context) {
	defer p.finish()
	for {
		ev, err := p.events.Recv()
		if err != nil {
			p.cancelMu.Lock()
			reason := p.cancelReason
			p.cancelMu.Unlock()
			switch {
			case reason != nil:
				p.err = reason
			case p.box.isStopping():
				p.err = p.box.stoppedError(p.what())
			case ctx.Err() != nil:
				p.err = errdefs.Wrap(errdefs.CodeOf(ctx.Err()), ctx.Err(), "process %d", p.pid)
			default:
				p.err = p.box.execError(ctx, err)
				if errdefs.IsCanceled(p.err) || errdefs.CodeOf(p.err) == errdefs.Internal {
					p.err = errdefs.New(errdefs.Unavailable, "box %s: the exec stream broke: %v", p.box.cfg.ID, p.err)
				}
			}
			p.status = ExitStatus{ExitCode: -1}
			return
		}
		if p.handle(ev) {
			p.drain()
			return
		}
	}
}

// handle delivers one event after Started; true once it was the exit,
// whose status and error it recorded.
func (p *Process) handle(ev *agentpb.ExecEvent) bool {
	switch e := ev.Event.(type) {
	case *agentpb.ExecEvent_Output:
		w := p.stdout
		if e.Output.Stream == agentpb.Output_STDERR {
			w = p.stderr
		}
		if p.writeErr == nil {
			if _, werr := w.Write(e.Output.Data); werr != nil {
				p.writeErr = werr
			}
		}
	case *agentpb.ExecEvent_Exit:
		ex := e.Exit
		p.trace.ExitReceived = time.Now()
		p.trace.setAgent(ex.Times)
		p.status = ExitStatus{ExitCode: int(ex.ExitCode), Signal: int(ex.Signal), Duration: time.Duration(ex.DurationUs) * time.Microsecond}
		if ex.Status == agentpb.Exit_SIGNALED && ex.Signal == int32(syscall.SIGKILL) && p.oomKnown {
			n, ok := p.box.oomKills()
			p.status.OOMKilled = ok && n > p.oomBefore
		}
		switch ex.Status {
		case agentpb.Exit_EXITED, agentpb.Exit_SIGNALED:
			if p.writeErr != nil {
				p.err = errdefs.Wrap(errdefs.Internal, p.writeErr, "write output of process %d", p.pid)
			}
		case agentpb.Exit_CANCELED:
			p.err = errdefs.New(errdefs.Canceled, "%s", ex.Error)
		case agentpb.Exit_STOPPED:
			p.status = ExitStatus{ExitCode: -1, Duration: p.status.Duration}
			p.err = p.box.stoppedError(p.what())
		default:
			p.err = exitError(ex)
		}
		p.cancelMu.Lock()
		if p.cancelReason != nil && ex.Status != agentpb.Exit_EXITED {
			p.err = p.cancelReason
		}
		p.cancelMu.Unlock()
		return true
	}
	return false
}

// drain reads the stream to its end, which follows the exit.
func (p *Process) drain() {
	for {
		if _, err := p.events.Recv(); err != nil {
			return
		}
	}
}

func (p *Process) what() string { return "process " + strconv.Itoa(p.pid) }

func (p *Process) finish() {
	p.cancel()
	if p.stopWatch != nil {
		p.stopWatch()
	}
	if p.stdinDone != nil {
		// A copier blocked in Read of the caller's Stdin ends when that Read
		// returns (as with os/exec); a pollable file is woken now.
		if f, ok := p.stdinReader.(*os.File); ok {
			_ = f.SetReadDeadline(time.Now())
		}
		select {
		case <-p.stdinDone:
		case <-time.After(10 * time.Millisecond):
		}
	}
	p.box.mu.Lock()
	delete(p.box.procs, p)
	p.box.mu.Unlock()
	close(p.done)
}

func (p *Process) copyStdin(r io.Reader) {
	defer close(p.stdinDone)
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if p.sendStdin(bytes.Clone(buf[:n])) != nil {
				return
			}
		}
		if err != nil {
			break
		}
		select {
		case <-p.done:
			return
		default:
		}
	}
	_ = p.closeStdin()
}

// sendStdin counts a chunk as sent, then sends it; the send waits while
// the box has no room (flow control) and ends with the process.
func (p *Process) sendStdin(chunk []byte) error {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	p.stdinMu.Lock()
	if p.stdinClosed {
		p.stdinMu.Unlock()
		return errdefs.New(errdefs.FailedPrecondition, "stdin of process %d is closed", p.pid)
	}
	p.stdinSent += uint64(len(chunk))
	p.stdinMu.Unlock()
	if err := p.stdin.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Stdin{Stdin: chunk}}); err != nil {
		return p.endedError("write stdin")
	}
	return nil
}

// closeStdin tells the agent to close stdin after the bytes sent so far.
func (p *Process) closeStdin() error {
	p.stdinMu.Lock()
	if p.stdinClosed {
		p.stdinMu.Unlock()
		return nil
	}
	p.stdinClosed = true
	after := p.stdinSent
	p.stdinMu.Unlock()
	return p.control("close stdin", func(ctx context.Context) error {
		_, err := p.client.CloseStdin(ctx, &agentpb.CloseStdinRequest{ExecId: p.execID, After: after})
		return err
	})
}

// Pid is the process's pid inside the box.
func (p *Process) Pid() int { return p.pid }

// Done is closed when the process has ended and all its output was delivered.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits for the process to end. Cancelling ctx kills its process
// group in the box; Wait then returns ctx's error class (Canceled or
// DeadlineExceeded).
func (p *Process) Wait(ctx context.Context) (ExitStatus, error) {
	select {
	case <-p.done:
		return p.status, p.err
	case <-ctx.Done():
		p.kill(errdefs.Wrap(errdefs.CodeOf(ctx.Err()), ctx.Err(), "wait for process %d", p.pid))
		<-p.done
		return p.status, p.err
	}
}

// Cancel kills the process group; Wait returns an error of class Canceled.
// It does not wait: Done closes once the box confirmed the kill.
func (p *Process) Cancel() {
	go p.kill(errdefs.New(errdefs.Canceled, "process %d was cancelled; its process group was killed", p.pid))
}

// kill asks the agent to SIGKILL the process group and waits (bounded) for
// the exit to come back, so the process is gone when Wait returns; then, or
// if the box does not answer, it drops the stream (the agent also kills the
// group when its stream goes away).
func (p *Process) kill(reason error) {
	p.canceled.Do(func() {
		p.cancelMu.Lock()
		p.cancelReason = reason
		p.cancelMu.Unlock()
		go func() { _ = p.Signal(syscall.SIGKILL) }() // ends within controlWait
		t := time.NewTimer(killWait)
		defer t.Stop()
		select {
		case <-p.done:
		case <-t.C:
		}
		p.cancel()
	})
}

// killWait bounds how long a cancellation waits for the box to confirm the
// process group died.
const killWait = 3 * time.Second

// controlWait bounds a control call to an agent that does not answer.
const controlWait = 5 * time.Second

// Output returns the collected stdout and stderr (when Command.Stdout/Stderr
// were nil). Valid after Done.
func (p *Process) Output() (stdout, stderr []byte) {
	<-p.done
	if p.outBuf != nil {
		stdout = p.outBuf.Bytes()
	}
	if p.errBuf != nil {
		stderr = p.errBuf.Bytes()
	}
	return
}

// endedError explains why a control call or a write came too late.
func (p *Process) endedError(what string) error {
	p.cancelMu.Lock()
	reason := p.cancelReason
	p.cancelMu.Unlock()
	if reason != nil {
		return errdefs.New(errdefs.CodeOf(reason), "process %d was cancelled: cannot %s", p.pid, what)
	}
	return errdefs.New(errdefs.FailedPrecondition, "process %d has exited: cannot %s", p.pid, what)
}

// control runs one control call. It never waits for stdin or output, only
// (bounded by controlWait) for the agent's answer.
func (p *Process) control(what string, call func(ctx context.Context) error) error {
	select {
	case <-p.done:
		return p.endedError(what)
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), controlWait)
	defer cancel()
	err := call(ctx)
	if err == nil {
		return nil
	}
	e := errgrpc.FromGRPC(err)
	switch {
	case errdefs.IsNotFound(e):
		return p.endedError(what) // the agent already forgot it
	case errdefs.IsFailedPrecondition(e) || errdefs.IsInvalidArgument(e):
		return e
	}
	select {
	case <-p.done:
		return p.endedError(what)
	default:
	}
	if p.box.isStopping() {
		return p.box.stoppedError(p.what())
	}
	return errdefs.Wrap(errdefs.CodeOf(e), e, "%s process %d", what, p.pid)
}

// Signal sends sig to the process group. It returns once the box delivered
// it; it never waits for stdin or output.
func (p *Process) Signal(sig syscall.Signal) error {
	if sig <= 0 || sig > 64 {
		return errdefs.New(errdefs.InvalidArgument, "signal %d is not a valid signal number", int(sig))
	}
	return p.control("signal", func(ctx context.Context) error {
		_, err := p.client.Signal(ctx, &agentpb.SignalRequest{ExecId: p.execID, Signal: int32(sig)})
		return err
	})
}

// Resize changes the terminal size. A process without a TTY gets an error
// of class FailedPrecondition.
func (p *Process) Resize(rows, cols uint32) error {
	if rows == 0 || cols == 0 || rows > 65535 || cols > 65535 {
		return errdefs.New(errdefs.InvalidArgument, "terminal size %dx%d: want 1..65535", rows, cols)
	}
	if !p.tty {
		return errdefs.New(errdefs.FailedPrecondition, "process %d has no terminal (start it with TTY to resize)", p.pid)
	}
	return p.control("resize", func(ctx context.Context) error {
		_, err := p.client.Resize(ctx, &agentpb.ResizeRequest{ExecId: p.execID, Size: &agentpb.TtySize{Rows: rows, Cols: cols}})
		return err
	})
}

// Write feeds stdin (Command.OpenStdin). It blocks while the box has no
// room (flow control: a process that does not read slows the writer); it
// returns an error once the process has ended (exited, killed, cancelled)
// or stdin was closed, whichever thread did it.
func (p *Process) Write(b []byte) (int, error) {
	if !p.openStdin {
		return 0, errdefs.New(errdefs.FailedPrecondition, "process %d was not started with OpenStdin", p.pid)
	}
	for off := 0; off < len(b); off += 1 << 20 {
		p.stdinMu.Lock()
		closed := p.stdinClosed
		p.stdinMu.Unlock()
		if closed {
			return off, errdefs.New(errdefs.FailedPrecondition, "stdin of process %d is closed", p.pid)
		}
		select {
		case <-p.done:
			return off, p.endedError("write stdin")
		default:
		}
		end := min(off+1<<20, len(b))
		if err := p.sendStdin(bytes.Clone(b[off:end])); err != nil {
			return off, err
		}
	}
	return len(b), nil
}

// CloseStdin closes the process's stdin after everything written before
// it; it returns at once, whether or not the process has read that yet.
// Idempotent; closing the stdin of an ended process is not an error.
func (p *Process) CloseStdin() error {
	if !p.openStdin && p.stdinDone == nil {
		return nil // stdin is /dev/null
	}
	err := p.closeStdin()
	if err != nil {
		select {
		case <-p.done:
			return nil // it exited; its stdin is gone anyway
		default:
		}
	}
	return err
}

// Result is what Run returns.
type Result struct {
	ExitStatus
	Stdout []byte
	Stderr []byte
}

// Run executes cmd and waits for it, collecting its output.
func (b *Box) Run(ctx context.Context, cmd Command) (Result, error) {
	cmd.Stdout, cmd.Stderr = nil, nil
	if cmd.Batch == 0 {
		cmd.Batch = RunBatch
	}
	p, err := b.Exec(ctx, cmd)
	if err != nil {
		return Result{ExitStatus: ExitStatus{ExitCode: -1}}, err
	}
	st, err := p.Wait(ctx)
	out, errOut := p.Output()
	return Result{ExitStatus: st, Stdout: out, Stderr: errOut}, err
}
