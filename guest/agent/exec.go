package agent

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/agentpb"
	"github.com/libbox/libbox/guest/spawner"
)

// drainGrace is how long output is still read after the process exited
// while its pipes stay open (a child that escaped the process group).
const drainGrace = 100 * time.Millisecond

// chunkSize is the largest output message. A pump's buffer starts at
// firstChunk and doubles, up to chunkSize, each time a read fills it: most
// processes print little, and 64 KiB per exec was most of the agent's
// garbage under many short execs.
const (
	chunkSize  = 32 << 10
	firstChunk = 4 << 10
)

// stdinStream is where an Exec's stdin comes from: the client's side of
// its stream.
type stdinStream interface {
	Recv() (*agentpb.ExecRequest, error)
}

// Exec runs one process (see agent.proto).
func (a *Agent) Exec(stream agentpb.Agent_ExecServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	received := time.Now()
	start := first.GetStart()
	if start == nil {
		return errdefs.New(errdefs.InvalidArgument, "the first Exec message must be a start")
	}
	return a.exec(stream.Context(), start, received, &events{one: stream.Send}, stream)
}

// Run runs one process whose stdin is /dev/null, its events packed into
// as few messages as it allows (see agent.proto).
func (a *Agent) Run(start *agentpb.ExecStart, stream agentpb.Agent_RunServer) error {
	received := time.Now()
	if start.GetStdin() {
		return errdefs.New(errdefs.InvalidArgument, "Run takes no stdin: use Exec to feed a process's input")
	}
	return a.exec(stream.Context(), start, received, &events{batch: stream.Send}, nil)
}

// proc is one process being run for an Exec.
type proc struct {
	id      uint64 // the exec id (Started.exec_id)
	pid     int
	tty     *os.File // master, when tty
	stdinW  *os.File // nil when stdin is /dev/null
	outputs []*os.File
	out     *events
	in      stdinStream // nil for Run
	exited  atomic.Bool // set once the exit is known (output drains)
	started time.Time
	// firstOutput is when the first output chunk was read (unix ns; 0: none).
	firstOutput atomic.Int64

	// mu orders control calls against the exit: a signal is only sent to
	// the process group while the process has not been seen to exit.
	mu sync.Mutex
	// ended is set when the exit arrived. Guarded by mu.
	ended bool
	// eofAt is how many stdin bytes to write before closing stdin, once
	// eofSet. Guarded by mu.
	eofAt  uint64
	eofSet bool

	stdinQ    chan []byte   // chunks for the stdin writer (never closed)
	eof       chan struct{} // closed when the client asked to close stdin
	eofOnce   sync.Once
	stdinDone chan struct{} // closed when the writer is finished with stdin
	stop      chan struct{} // closed when the exec ends
}

// execTable names the running execs by id for the control calls.
type execTable struct {
	mu sync.Mutex
	// next is the last id handed out; ids are never reused. Guarded by mu.
	next uint64
	// procs maps exec ids to running execs. Guarded by mu.
	procs map[uint64]*proc
}

func (t *execTable) add(p *proc) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.procs == nil {
		t.procs = map[uint64]*proc{}
	}
	t.next++
	p.id = t.next
	t.procs[p.id] = p
}

func (t *execTable) remove(p *proc) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.procs, p.id)
}

func (t *execTable) get(id uint64) (*proc, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.procs[id]; ok {
		return p, nil
	}
	return nil, errdefs.New(errdefs.NotFound, "exec %d is not running (it ended, or never started)", id)
}

func exitEvent(ex *agentpb.Exit) *agentpb.ExecEvent {
	return &agentpb.ExecEvent{Event: &agentpb.ExecEvent_Exit{Exit: ex}}
}

func spawnFailed(err error) *agentpb.ExecEvent {
	return exitEvent(&agentpb.Exit{
		Status:   agentpb.Exit_SPAWN_FAILED,
		ExitCode: -1,
		Error:    err.Error(),
		Code:     errdefs.CodeOf(err).String(),
		// Set where the failure is classified (prepare, lookPath, spawnError).
		SpawnReason: reasonOf(err),
	})
}

// exec runs start, its events going out, its stdin (if any) coming from in.
func (a *Agent) exec(ctx context.Context, start *agentpb.ExecStart, received time.Time, out *events, in stdinStream) error {
	if a.stoppingSince() != 0 {
		return errdefs.New(errdefs.Unavailable, "the box is stopping: no new processes")
	}
	p, req, closeChild, err := a.prepare(start)
	if err != nil {
		return out.last(spawnFailed(err))
	}
	p.out, p.in = out, in
	times := &spawner.Times{}
	req.Times = times
	p.started = time.Now()
	pid, exitCh, err := a.sp.Spawn(ctx, req)
	closeChild()
	if err != nil {
		p.closeParent()
		if ctx.Err() != nil {
			return errdefs.Wrap(errdefs.Canceled, ctx.Err(), "exec canceled before spawn")
		}
		return out.last(spawnFailed(spawnError(req, err)))
	}
	defer a.trim.execEnded()
	p.pid = pid
	a.execs.add(p)
	a.execsServed.Add(1)
	defer a.execs.remove(p)
	if a.stoppingSince() != 0 {
		// Shutdown began while this spawned; its kill may have missed it.
		_ = spawner.KillGroup(pid, syscall.SIGKILL)
	}
	var holdEnd *time.Timer
	if hold := time.Duration(start.GetHoldUs()) * time.Microsecond; hold > 0 {
		// Started and output wait for the exit, at most this long (the
		// wait began at the spawn).
		out.hold()
		holdEnd = time.AfterFunc(hold-time.Since(times.Spawned), func() { _ = out.release() })
		defer holdEnd.Stop()
	}
	if err := out.send(&agentpb.ExecEvent{Event: &agentpb.ExecEvent_Started{Started: &agentpb.Started{Pid: int32(pid), ExecId: p.id}}}); err != nil {
		// The client is gone: the process must not outlive it.
		_ = spawner.KillGroup(pid, syscall.SIGKILL)
	}

	// Output pumps.
	var pumps sync.WaitGroup
	for i, f := range p.outputs {
		s := agentpb.Output_STDOUT
		if i == 1 {
			s = agentpb.Output_STDERR
		}
		pumps.Add(1)
		go func() {
			defer pumps.Done()
			p.pump(f, s)
		}()
	}
	// Stdin writer.
	if p.stdinW != nil {
		go func() {
			defer close(p.stdinDone)
			p.writeStdin()
		}()
	} else {
		close(p.stdinDone)
	}
	// Stdin reader: owned by the agent (it ends when the stream does).
	// Without stdin nothing on the stream is for the process.
	if in != nil && p.stdinW != nil {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			p.readStdin()
		}()
	}

	var timeout <-chan time.Time
	if start.GetTimeoutMs() > 0 {
		t := time.NewTimer(time.Duration(start.GetTimeoutMs()) * time.Millisecond)
		defer t.Stop()
		timeout = t.C
	}
	status := agentpb.Exit_EXITED
	var ex spawner.Exit
	select {
	case ex = <-exitCh:
	case <-timeout:
		status = agentpb.Exit_TIMED_OUT
		_ = spawner.KillGroup(pid, syscall.SIGKILL)
		ex = <-exitCh
	case <-ctx.Done():
		status = agentpb.Exit_CANCELED
		_ = spawner.KillGroup(pid, syscall.SIGKILL)
		ex = <-exitCh
	}
	p.mu.Lock()
	p.ended = true
	p.mu.Unlock()
	if since := a.stoppingSince(); since != 0 && status == agentpb.Exit_EXITED && ex.At.UnixNano() >= since {
		status = agentpb.Exit_STOPPED
	}
	if !start.GetKeepBackground() {
		_ = spawner.KillGroup(pid, syscall.SIGKILL)
	}
	// Output drained from now on goes with the exit (Run).
	if holdEnd != nil {
		holdEnd.Stop()
	}
	out.hold()
	// Stop reading once the pipes run dry (see pump).
	p.exited.Store(true)
	for _, f := range p.outputs {
		_ = f.SetReadDeadline(time.Now().Add(drainGrace))
	}
	pumps.Wait()
	close(p.stop)
	if p.stdinW != nil {
		_ = p.stdinW.Close() // unblocks a pending write
	}
	<-p.stdinDone
	p.closeParent()

	res := &agentpb.Exit{
		Status:     status,
		ExitCode:   -1,
		DurationUs: ex.At.Sub(p.started).Microseconds(),
		Times: &agentpb.ExecTimes{
			Received:    received.UnixNano(),
			Dequeued:    times.Dequeued.UnixNano(),
			Spawned:     times.Spawned.UnixNano(),
			FirstOutput: p.firstOutput.Load(),
			Exited:      ex.At.UnixNano(),
		},
	}
	ws := ex.Status
	switch {
	case ws.Exited():
		res.ExitCode = int32(ws.ExitStatus())
	case ws.Signaled():
		res.Signal = int32(ws.Signal())
		if status == agentpb.Exit_EXITED {
			res.Status = agentpb.Exit_SIGNALED
		}
	}
	if status == agentpb.Exit_STOPPED {
		res.Error = "the box stopped while the process ran"
		res.Code = errdefs.Unavailable.String()
	}
	switch status {
	case agentpb.Exit_TIMED_OUT:
		res.Error = "timed out after " + (time.Duration(start.GetTimeoutMs()) * time.Millisecond).String() + "; the process group was killed"
		res.Code = errdefs.DeadlineExceeded.String()
	case agentpb.Exit_CANCELED:
		res.Error = "canceled by the client; the process group was killed"
		res.Code = errdefs.Canceled.String()
	}
	if ctx.Err() != nil {
		return nil // nobody to tell
	}
	res.Times.ExitSent = time.Now().UnixNano()
	return out.last(exitEvent(res))
}

// pump copies one output to the stream until EOF, or until the process has
// exited and the pipe stays empty for drainGrace.
func (p *proc) pump(f *os.File, s agentpb.Output_Stream) {
	buf := make([]byte, firstChunk)
	send := func(n int) bool {
		if p.firstOutput.Load() == 0 {
			p.firstOutput.CompareAndSwap(0, time.Now().UnixNano())
		}
		data := make([]byte, n)
		copy(data, buf[:n])
		return p.out.send(&agentpb.ExecEvent{Event: &agentpb.ExecEvent_Output{Output: &agentpb.Output{Stream: s, Data: data}}}) == nil
	}
	for {
		if p.exited.Load() {
			_ = f.SetReadDeadline(time.Now().Add(drainGrace))
		}
		n, err := f.Read(buf)
		if n > 0 && !send(n) {
			// Client gone; keep draining so the child is not blocked
			// on a full pipe until it is killed.
			p.sendDiscard(f, buf)
			return
		}
		if n == len(buf) && n < chunkSize {
			buf = make([]byte, min(2*n, chunkSize))
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// A deadline can fire before the poller has seen data that
			// arrived in time (a busy machine): read what is buffered
			// directly, so nothing written before the exit is lost.
			for {
				n, rerr := rawRead(f, buf)
				if n > 0 && !send(n) {
					return
				}
				if n <= 0 || rerr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// rawRead reads from a non-blocking fd without the poller: (0, nil) at EOF,
// (-1, EAGAIN) when nothing is buffered.
func rawRead(f *os.File, buf []byte) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	if err := rc.Control(func(fd uintptr) {
		for {
			n, rerr = unix.Read(int(fd), buf)
			if rerr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return 0, err
	}
	return n, rerr
}

func (p *proc) sendDiscard(f *os.File, buf []byte) {
	for {
		if p.exited.Load() {
			_ = f.SetReadDeadline(time.Now().Add(drainGrace))
		}
		if _, err := f.Read(buf); err != nil {
			return
		}
	}
}

// readStdin takes stdin chunks off the stream, in order, until it ends; the
// end of the client's side closes stdin after everything it sent.
func (p *proc) readStdin() {
	var received uint64
	for {
		msg, err := p.in.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				p.closeStdinAfter(received)
			}
			return
		}
		if b := msg.GetStdin(); len(b) > 0 && p.stdinW != nil {
			received += uint64(len(b))
			p.queueStdin(b)
		}
	}
}

// queueStdin hands a chunk to the stdin writer; it blocks (flow control)
// until the writer takes it, the writer is finished or the exec ends.
func (p *proc) queueStdin(b []byte) {
	select {
	case p.stdinQ <- b:
	case <-p.stdinDone: // input after its end is dropped
	case <-p.stop:
	}
}

// closeStdinAfter asks the writer to close stdin once n bytes were taken
// off the stream; the first request wins.
func (p *proc) closeStdinAfter(n uint64) {
	p.mu.Lock()
	if !p.eofSet {
		p.eofSet, p.eofAt = true, n
	}
	p.mu.Unlock()
	p.eofOnce.Do(func() { close(p.eof) })
}

// writeStdin writes stream chunks in order until the close request's byte
// count is reached (later input is dropped), then closes stdin.
func (p *proc) writeStdin() {
	var taken uint64
	eof := p.eof
	for {
		if eof == nil { // the close was requested: is its count reached?
			p.mu.Lock()
			at := p.eofAt
			p.mu.Unlock()
			if taken >= at {
				p.endStdin()
				return
			}
		}
		select {
		case b := <-p.stdinQ:
			n := uint64(len(b))
			p.mu.Lock()
			if p.eofSet && taken+n > p.eofAt {
				b = b[:max(0, int64(p.eofAt)-int64(taken))]
			}
			p.mu.Unlock()
			taken += n
			if len(b) > 0 {
				if _, err := p.stdinW.Write(b); err != nil {
					return
				}
			}
		case <-eof:
			eof = nil
		case <-p.stop:
			return
		}
	}
}

// endStdin closes the process's input: on a terminal, end of input is ^D.
func (p *proc) endStdin() {
	if p.tty != nil {
		_, _ = p.stdinW.Write([]byte{4})
		return
	}
	_ = p.stdinW.Close()
}

// Signal sends a signal to an exec's process group (see agent.proto).
func (a *Agent) Signal(ctx context.Context, req *agentpb.SignalRequest) (*agentpb.ControlResponse, error) {
	sig := req.GetSignal()
	if sig <= 0 || sig > 64 {
		return nil, errdefs.New(errdefs.InvalidArgument, "signal %d is not a valid signal number", sig)
	}
	p, err := a.execs.get(req.GetExecId())
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return nil, errdefs.New(errdefs.FailedPrecondition, "exec %d has exited: cannot signal it", p.id)
	}
	if err := spawner.KillGroup(p.pid, syscall.Signal(sig)); err != nil && err != syscall.ESRCH {
		return nil, errdefs.Wrap(errdefs.Internal, err, "signal exec %d", p.id)
	}
	return &agentpb.ControlResponse{}, nil
}

// Resize changes an exec's terminal size (see agent.proto).
func (a *Agent) Resize(ctx context.Context, req *agentpb.ResizeRequest) (*agentpb.ControlResponse, error) {
	rows, cols := req.GetSize().GetRows(), req.GetSize().GetCols()
	if rows == 0 || cols == 0 || rows > 65535 || cols > 65535 {
		return nil, errdefs.New(errdefs.InvalidArgument, "terminal size %dx%d: want 1..65535", rows, cols)
	}
	p, err := a.execs.get(req.GetExecId())
	if err != nil {
		return nil, err
	}
	if p.tty == nil {
		return nil, errdefs.New(errdefs.FailedPrecondition, "exec %d has no terminal (it was started without tty)", p.id)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return nil, errdefs.New(errdefs.FailedPrecondition, "exec %d has exited: cannot resize it", p.id)
	}
	if err := resizePTY(p.tty, rows, cols); err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "resize exec %d", p.id)
	}
	return &agentpb.ControlResponse{}, nil
}

// CloseStdin ends an exec's input after the bytes the client sent (see
// agent.proto). It never waits for the process to read them.
func (a *Agent) CloseStdin(ctx context.Context, req *agentpb.CloseStdinRequest) (*agentpb.ControlResponse, error) {
	p, err := a.execs.get(req.GetExecId())
	if err != nil {
		return nil, err
	}
	if p.stdinW == nil {
		return nil, errdefs.New(errdefs.FailedPrecondition, "exec %d was started without stdin", p.id)
	}
	p.closeStdinAfter(req.GetAfter())
	return &agentpb.ControlResponse{}, nil
}

// prepare resolves the request inside the box and creates the child's stdio.
// closeChild closes the child's ends after the spawn.
func (a *Agent) prepare(s *agentpb.ExecStart) (*proc, *spawner.Request, func(), error) {
	if len(s.GetArgs()) == 0 || s.GetArgs()[0] == "" {
		return nil, nil, nil, errdefs.New(errdefs.InvalidArgument, "exec needs a command (args is empty)")
	}
	for _, arg := range s.GetArgs() {
		for i := 0; i < len(arg); i++ {
			if arg[i] == 0 {
				return nil, nil, nil, errdefs.New(errdefs.InvalidArgument, "argument %q contains a NUL byte", truncate(arg, 64))
			}
		}
	}
	u, err := lookupUser(a.root, s.GetUser())
	if err != nil {
		return nil, nil, nil, withReason(agentpb.Exit_BAD_USER, err)
	}
	env, err := buildEnv(u, s.GetTty(), a.ident.hostname(a.opts.Hostname), s.GetEnv())
	if err != nil {
		return nil, nil, nil, err
	}
	dir := s.GetDir()
	if dir == "" {
		dir = u.home
		if _, fi, err := resolveIn(a.root, dir); err != nil || !fi.IsDir() {
			dir = "/"
		}
	} else {
		if _, err := boxRel(dir); err != nil {
			return nil, nil, nil, withReason(agentpb.Exit_BAD_WORKING_DIR, errdefs.New(errdefs.InvalidArgument, "working directory %q must be an absolute path without '..'", dir))
		}
		_, fi, err := resolveIn(a.root, dir)
		if err != nil {
			return nil, nil, nil, withReason(agentpb.Exit_BAD_WORKING_DIR, errdefs.New(errdefs.InvalidArgument, "working directory %q does not exist in the box", dir))
		}
		if !fi.IsDir() {
			return nil, nil, nil, withReason(agentpb.Exit_BAD_WORKING_DIR, errdefs.New(errdefs.InvalidArgument, "working directory %q is not a directory", dir))
		}
	}
	path, err := lookPath(a.root, s.GetArgs()[0], dir, envGet(env, "PATH"))
	if err != nil {
		return nil, nil, nil, err
	}
	req := &spawner.Request{
		Path: path,
		Args: s.GetArgs(),
		Env:  env,
		Dir:  dir,
		TTY:  s.GetTty(),
	}
	if a.root != "/" {
		req.Root = a.root
	}
	if s.GetUser() != "" {
		req.Cred = &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups}
		if req.Cred.Groups == nil {
			req.Cred.Groups = []uint32{}
		}
	}

	p := &proc{stdinQ: make(chan []byte, 16), eof: make(chan struct{}), stdinDone: make(chan struct{}), stop: make(chan struct{})}
	var child []*os.File
	closeChild := func() {
		for _, f := range child {
			f.Close()
		}
	}
	fail := func(err error) (*proc, *spawner.Request, func(), error) {
		closeChild()
		p.closeParent()
		return nil, nil, nil, errdefs.Wrap(errdefs.Internal, err, "prepare stdio")
	}
	if s.GetTty() {
		m, sl, err := openPTY(s.GetTtySize().GetRows(), s.GetTtySize().GetCols())
		if err != nil {
			return fail(err)
		}
		p.tty = m
		child = append(child, sl)
		p.outputs = []*os.File{m}
		fd := sl.Fd()
		req.Files = []uintptr{fd, fd, fd}
		if s.GetStdin() {
			// Writes go to the master; a dup keeps the two lifetimes apart.
			w, err := dupFile(m, "pty-input")
			if err != nil {
				return fail(err)
			}
			p.stdinW = w
		}
		return p, req, closeChild, nil
	}
	// The child's ends stay raw blocking fds (never registered with the
	// poller); the agent's ends are non-blocking and pollable.
	var rawChild []int
	closeRaw := func() {
		for _, fd := range rawChild {
			unix.Close(fd)
		}
	}
	pipe := func(parentReads bool) (*os.File, int, error) {
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			return nil, -1, err
		}
		parent, child := fds[1], fds[0]
		if parentReads {
			parent, child = fds[0], fds[1]
		}
		if err := unix.SetNonblock(parent, true); err != nil {
			unix.Close(fds[0])
			unix.Close(fds[1])
			return nil, -1, err
		}
		rawChild = append(rawChild, child)
		return os.NewFile(uintptr(parent), "pipe"), child, nil
	}
	failRaw := func(err error) (*proc, *spawner.Request, func(), error) {
		closeRaw()
		return fail(err)
	}
	var stdinFd int
	if s.GetStdin() {
		w, fd, err := pipe(false)
		if err != nil {
			return failRaw(err)
		}
		p.stdinW, stdinFd = w, fd
	} else {
		stdinFd = a.devNull // shared: not the child's to close
	}
	or, ofd, err := pipe(true)
	if err != nil {
		return failRaw(err)
	}
	p.outputs = append(p.outputs, or)
	er, efd, err := pipe(true)
	if err != nil {
		return failRaw(err)
	}
	p.outputs = append(p.outputs, er)
	req.Files = []uintptr{uintptr(stdinFd), uintptr(ofd), uintptr(efd)}
	return p, req, closeRaw, nil
}

func (p *proc) closeParent() {
	for _, f := range p.outputs {
		f.Close()
	}
	if p.stdinW != nil {
		p.stdinW.Close()
	}
}

func dupFile(f *os.File, name string) (*os.File, error) {
	conn, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd int
	var derr error
	if err := conn.Control(func(fd uintptr) {
		nfd, derr = dupCloexec(int(fd))
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	return os.NewFile(uintptr(nfd), name), nil
}

// spawnError explains a failed fork/exec.
func spawnError(req *spawner.Request, err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOENT:
			return withReason(agentpb.Exit_NOT_FOUND, errdefs.New(errdefs.NotFound, "spawn %s: %v (the program or its interpreter is missing in the box)", req.Path, err))
		case syscall.EACCES, syscall.EPERM:
			return withReason(agentpb.Exit_NOT_EXECUTABLE, errdefs.New(errdefs.InvalidArgument, "spawn %s: %v", req.Path, err))
		case syscall.ENOEXEC:
			return withReason(agentpb.Exit_NOT_EXECUTABLE, errdefs.New(errdefs.InvalidArgument, "spawn %s: not an executable for this box (%v)", req.Path, err))
		case syscall.EAGAIN:
			return errdefs.New(errdefs.Unavailable, "spawn %s: the box is at its process limit (%v); retry once some of its processes end", req.Path, err)
		case syscall.ENOMEM:
			return errdefs.New(errdefs.Unavailable, "spawn %s: the box is out of memory (%v)", req.Path, err)
		}
	}
	return errdefs.Wrap(errdefs.Internal, err, "spawn %s", req.Path)
}
