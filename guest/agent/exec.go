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

// chunkSize is the largest output message.
const chunkSize = 32 << 10

// execStream is the server side of one Exec.
type execStream interface {
	Send(*agentpb.ExecEvent) error
	Recv() (*agentpb.ExecRequest, error)
	Context() context.Context
}

// Exec runs one process (see agent.proto).
func (a *Agent) Exec(stream agentpb.Agent_ExecServer) error {
	return a.exec(stream)
}

// proc is one process being run for an Exec.
type proc struct {
	pid     int
	tty     *os.File // master, when tty
	stdinW  *os.File // nil when stdin is /dev/null
	outputs []*os.File
	sendMu  sync.Mutex
	stream  execStream
	exited  atomic.Bool
	started time.Time
	// firstOutput is when the first output chunk was read (unix ns; 0: none).
	firstOutput atomic.Int64

	stdinQ  chan []byte   // chunks for the stdin writer (never closed)
	eof     chan struct{} // closed when the client closed stdin
	eofOnce sync.Once
	stop    chan struct{} // closed when the exec ends
}

func (p *proc) send(ev *agentpb.ExecEvent) error {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	return p.stream.Send(ev)
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
	})
}

func (a *Agent) exec(stream execStream) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	received := time.Now()
	start := first.GetStart()
	if start == nil {
		return errdefs.New(errdefs.InvalidArgument, "the first Exec message must be a start")
	}
	ctx := stream.Context()
	p, req, closeChild, err := a.prepare(start)
	if err != nil {
		return stream.Send(spawnFailed(err))
	}
	p.stream = stream
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
		return stream.Send(spawnFailed(spawnError(req, err)))
	}
	p.pid = pid
	if err := p.send(&agentpb.ExecEvent{Event: &agentpb.ExecEvent_Started{Started: &agentpb.Started{Pid: int32(pid)}}}); err != nil {
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
	var stdinDone chan struct{}
	if p.stdinW != nil {
		stdinDone = make(chan struct{})
		go func() {
			defer close(stdinDone)
			p.writeStdin()
		}()
	}
	// Control messages: owned by the agent (they end when the stream does).
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		p.control()
	}()

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
	if !start.GetKeepBackground() {
		_ = spawner.KillGroup(pid, syscall.SIGKILL)
	}
	// Stop reading once the pipes run dry (see pump).
	p.exited.Store(true)
	for _, f := range p.outputs {
		_ = f.SetReadDeadline(time.Now().Add(drainGrace))
	}
	pumps.Wait()
	close(p.stop)
	if p.stdinW != nil {
		_ = p.stdinW.Close() // unblocks a pending write
		<-stdinDone
	}
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
	return p.send(exitEvent(res))
}

// pump copies one output to the stream until EOF, or until the process has
// exited and the pipe stays empty for drainGrace.
func (p *proc) pump(f *os.File, s agentpb.Output_Stream) {
	buf := make([]byte, chunkSize)
	send := func(n int) bool {
		if p.firstOutput.Load() == 0 {
			p.firstOutput.CompareAndSwap(0, time.Now().UnixNano())
		}
		data := make([]byte, n)
		copy(data, buf[:n])
		return p.send(&agentpb.ExecEvent{Event: &agentpb.ExecEvent_Output{Output: &agentpb.Output{Stream: s, Data: data}}}) == nil
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

// control handles client messages after the start until the stream ends.
func (p *proc) control() {
	for {
		msg, err := p.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				p.closeStdin()
			}
			return
		}
		switch m := msg.Msg.(type) {
		case *agentpb.ExecRequest_Stdin:
			if p.stdinW != nil && len(m.Stdin) > 0 {
				p.queueStdin(m.Stdin)
			}
		case *agentpb.ExecRequest_CloseStdin:
			p.closeStdin()
		case *agentpb.ExecRequest_Signal:
			if !p.exited.Load() && m.Signal > 0 && m.Signal < 65 {
				_ = spawner.KillGroup(p.pid, syscall.Signal(m.Signal))
			}
		case *agentpb.ExecRequest_Resize:
			if p.tty != nil && m.Resize != nil {
				_ = resizePTY(p.tty, m.Resize.GetRows(), m.Resize.GetCols())
			}
		}
	}
}

// queueStdin hands a chunk to the stdin writer; it blocks (flow control)
// until the writer takes it or the exec ends.
func (p *proc) queueStdin(b []byte) {
	select {
	case p.stdinQ <- b:
	case <-p.eof: // input after its end is dropped
	case <-p.stop:
	}
}

func (p *proc) closeStdin() {
	p.eofOnce.Do(func() { close(p.eof) })
}

// writeStdin writes queued chunks in order; at the client's end of input
// it writes what is still queued, then closes the process's stdin.
func (p *proc) writeStdin() {
	write := func(b []byte) bool {
		_, err := p.stdinW.Write(b)
		return err == nil
	}
	for {
		select {
		case b := <-p.stdinQ:
			if !write(b) {
				return
			}
		case <-p.eof:
			for {
				select {
				case b := <-p.stdinQ:
					if !write(b) {
						return
					}
					continue
				default:
				}
				break
			}
			if p.tty != nil {
				// On a terminal, end of input is ^D at the start of a line.
				_, _ = p.stdinW.Write([]byte{4})
				return
			}
			_ = p.stdinW.Close()
			return
		case <-p.stop:
			return
		}
	}
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
		return nil, nil, nil, err
	}
	env, err := buildEnv(u, s.GetTty(), a.opts.Hostname, s.GetEnv())
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
			return nil, nil, nil, errdefs.New(errdefs.InvalidArgument, "working directory %q must be an absolute path without '..'", dir)
		}
		_, fi, err := resolveIn(a.root, dir)
		if err != nil {
			return nil, nil, nil, errdefs.New(errdefs.InvalidArgument, "working directory %q does not exist in the box", dir)
		}
		if !fi.IsDir() {
			return nil, nil, nil, errdefs.New(errdefs.InvalidArgument, "working directory %q is not a directory", dir)
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

	p := &proc{stdinQ: make(chan []byte, 16), eof: make(chan struct{}), stop: make(chan struct{})}
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
		fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return failRaw(err)
		}
		rawChild = append(rawChild, fd)
		stdinFd = fd
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
			return errdefs.New(errdefs.NotFound, "spawn %s: %v (the program or its interpreter is missing in the box)", req.Path, err)
		case syscall.EACCES, syscall.EPERM:
			return errdefs.New(errdefs.InvalidArgument, "spawn %s: %v", req.Path, err)
		case syscall.ENOEXEC:
			return errdefs.New(errdefs.InvalidArgument, "spawn %s: not an executable for this box (%v)", req.Path, err)
		}
	}
	return errdefs.Wrap(errdefs.Internal, err, "spawn %s", req.Path)
}
