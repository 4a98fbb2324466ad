// Package forkserver starts processes for a large host process from a
// small one. A host with libbox loaded (a Python or Node process, a Go
// program with a big heap) pays for every fork it makes itself with a copy
// of its page tables: Go takes its cheap vfork path only without
// CLONE_NEWUSER, and a sandbox box needs a new user namespace. The fork
// server is a small static process (the box agent binary in its
// --fork-server mode) that the host starts once through the vfork path;
// it then forks each box agent from its own small address space.
//
// The host talks to it over one SOCK_SEQPACKET socket: a request is one
// message (a JSON header and the child's fds as SCM_RIGHTS), the reply one
// message (the pid or the error, and a pidfd of the child as SCM_RIGHTS).
//
// What a direct fork guarantees, the server keeps:
//   - Pdeathsig: the server is started with Pdeathsig SIGKILL from a thread
//     that lives as long as the host (see libbox/internal/launch), and it
//     forks every child from one thread of its own that never exits; so the
//     host's death kills the server, and the server's death sends each child
//     the Pdeathsig it asked for. A detached child asks for none and outlives
//     both.
//   - CLONE_INTO_CGROUP: the cgroup fd travels with the other fds.
//   - pidfd: the server sends the pidfd the clone made, so the host never
//     names the child by a pid that may be reused. The host is not the
//     child's parent: it learns of the exit by polling the pidfd, and the
//     server reaps (the exit status is not reported; nothing needs it).
//
// The server never runs anything on its own account, never reads the
// box's files and holds no fd of a child once its reply is sent.
package forkserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/guest/bootparam"
)

// maxFDs is the most fds one request may carry (the kernel's SCM_MAX_FD
// is 253).
const maxFDs = 64

// maxMsg bounds one message (arguments and environment of one child).
const maxMsg = 1 << 20

// request is the header of one fork request. fds[:Files] are the child's
// fds 0..Files-1; fds[Files] is the cgroup fd when CgroupFD is set.
type request struct {
	Argv0      string                 `json:"argv0"`
	Argv       []string               `json:"argv"`
	Env        []string               `json:"env"`
	Dir        string                 `json:"dir"`
	Files      int                    `json:"files"`
	Cloneflags uintptr                `json:"cloneflags"`
	Setsid     bool                   `json:"setsid,omitempty"`
	Uids       []syscall.SysProcIDMap `json:"uids,omitempty"`
	Gids       []syscall.SysProcIDMap `json:"gids,omitempty"`
	SetGroups  bool                   `json:"setgroups,omitempty"`
	Cred       *[2]uint32             `json:"cred,omitempty"` // uid, gid
	Pdeathsig  syscall.Signal         `json:"pdeathsig,omitempty"`
	CgroupFD   bool                   `json:"cgroup_fd,omitempty"`
}

// ready is the server's first message.
type ready struct {
	Protocol int `json:"protocol"` // bootparam.LaunchProtocol; 0: an older server
}

// reply is the answer to one request; a pidfd comes with it when Pid > 0.
type reply struct {
	Pid   int    `json:"pid,omitempty"`
	Errno int    `json:"errno,omitempty"` // the fork or exec failed with this errno
	Err   string `json:"err,omitempty"`   // the request was refused
}

// Serve answers fork requests on the SOCK_SEQPACKET socket fd until the
// other end closes it. It reaps every child it forked.
func Serve(fd int) error {
	// Pdeathsig is tied to the thread that forks: fork from this one, and
	// never unlock it, so it lives as long as the process.
	runtime.LockOSThread()
	syscall.CloseOnExec(fd)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGCHLD)
	go reap(sigs)
	signal.Ignore(unix.SIGPIPE)
	conn, err := unixConn(fd)
	if err != nil {
		return err
	}
	defer conn.Close()
	// The first message says the server is serving and which launch
	// protocol it speaks (see Client.WaitReady).
	b, _ := json.Marshal(&ready{Protocol: bootparam.LaunchProtocol})
	if _, err := conn.Write(b); err != nil {
		return nil
	}
	buf := make([]byte, maxMsg)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	for {
		n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			return nil // the host closed its end, or is gone
		}
		fds, err := parseFDs(oob[:oobn])
		var rep reply
		var pidfd = -1
		if err == nil {
			var req request
			if err = json.Unmarshal(buf[:n], &req); err == nil {
				rep, pidfd = fork(&req, fds)
			}
		}
		if err != nil {
			rep = reply{Err: err.Error()}
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
		b, _ := json.Marshal(&rep)
		var rights []byte
		if pidfd >= 0 {
			rights = unix.UnixRights(pidfd)
		}
		_, _, err = conn.WriteMsgUnix(b, rights, nil)
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
		if err != nil {
			return nil
		}
	}
}

// unixConn takes fd, one end of a unix socket, into the net poller.
func unixConn(fd int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), "fork-server")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	conn, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, errors.New("fork server: fd is not a unix socket")
	}
	return conn, nil
}

func parseFDs(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range got {
			syscall.CloseOnExec(fd) // only the child's dup2 copies may cross exec
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

func fork(req *request, fds []int) (reply, int) {
	want := req.Files
	if req.CgroupFD {
		want++
	}
	if req.Files < 0 || len(fds) != want {
		return reply{Err: fmt.Sprintf("fork server: %d fds for %d files", len(fds), want)}, -1
	}
	pidfd := -1
	sys := &syscall.SysProcAttr{
		Cloneflags: req.Cloneflags, Setsid: req.Setsid,
		UidMappings: req.Uids, GidMappings: req.Gids, GidMappingsEnableSetgroups: req.SetGroups,
		Pdeathsig: req.Pdeathsig, PidFD: &pidfd,
	}
	if req.Cred != nil {
		sys.Credential = &syscall.Credential{Uid: req.Cred[0], Gid: req.Cred[1]}
	}
	if req.CgroupFD {
		sys.UseCgroupFD, sys.CgroupFD = true, fds[req.Files]
	}
	files := make([]uintptr, req.Files)
	for i := range files {
		files[i] = uintptr(fds[i])
	}
	pid, err := syscall.ForkExec(req.Argv0, req.Argv, &syscall.ProcAttr{Dir: req.Dir, Env: req.Env, Files: files, Sys: sys})
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return reply{Errno: int(errno)}, -1
		}
		return reply{Err: err.Error()}, -1
	}
	return reply{Pid: pid}, pidfd
}

// reap collects every exited child (the server forks nothing else).
func reap(sigs <-chan os.Signal) {
	for range sigs {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err == unix.EINTR {
				continue
			}
			if pid <= 0 {
				break
			}
		}
	}
}

// Client is the host's end of a fork server. Its calls are safe from many
// goroutines; the server answers one request at a time.
type Client struct {
	conn   *net.UnixConn // the socket to the server; Close may close it at any time
	closed atomic.Bool

	mu sync.Mutex // one request at a time
	// ready: the server's first message was read. Guarded by mu.
	ready bool
	buf   []byte // guarded by mu
	oob   []byte // guarded by mu
}

// WaitReady waits for the server to start serving (its runtime is up),
// which a caller that has another way to fork need not wait for; ForkExec
// waits for it too. It returns ErrServerGone when the server died first,
// or when it speaks another launch protocol (bootparam.LaunchProtocol;
// the client is closed then).
func (c *Client) WaitReady() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waitReadyLocked()
}

func (c *Client) waitReadyLocked() error {
	if c.closed.Load() {
		return ErrServerGone
	}
	if c.ready {
		return nil
	}
	n, err := c.conn.Read(c.buf)
	if err != nil || n == 0 {
		c.shutdown()
		return fmt.Errorf("%w: %v", ErrServerGone, err)
	}
	var r ready
	if err := json.Unmarshal(c.buf[:n], &r); err != nil || r.Protocol != bootparam.LaunchProtocol {
		c.shutdown()
		return fmt.Errorf("%w: it speaks launch protocol %d, this library %d (rebuild both from one source)", ErrServerGone, r.Protocol, bootparam.LaunchProtocol)
	}
	c.ready = true
	return nil
}

// NewClient wraps the host's end of the server's socket (it takes fd).
func NewClient(fd int) (*Client, error) {
	conn, err := unixConn(fd)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, buf: make([]byte, 4096), oob: make([]byte, unix.CmsgSpace(4))}, nil
}

// ErrServerGone is returned once the server exited or the client was
// closed; the caller starts a new server (the request was not carried out,
// or its child is already dead by its Pdeathsig).
var ErrServerGone = errors.New("fork server is gone")

// ForkExec starts argv0 as syscall.ForkExec would, with attr's files and
// the attributes of attr.Sys a sandbox uses (clone flags, setsid, id maps,
// credential uid/gid, Pdeathsig, cgroup fd); any other attribute is refused.
// It returns the child's pid and a pidfd the caller owns. The caller is not
// the child's parent: it cannot wait for it, only poll the pidfd.
func (c *Client) ForkExec(argv0 string, argv []string, attr *syscall.ProcAttr) (pid, pidfd int, err error) {
	req := request{Argv0: argv0, Argv: argv, Env: attr.Env, Dir: attr.Dir, Files: len(attr.Files)}
	fds := make([]int, 0, len(attr.Files)+1)
	for _, f := range attr.Files {
		fds = append(fds, int(f))
	}
	if s := attr.Sys; s != nil {
		if s.Ptrace || s.Setctty || s.Noctty || s.Foreground || s.Setpgid || s.Chroot != "" ||
			s.AmbientCaps != nil || s.Unshareflags != 0 ||
			(s.Credential != nil && (len(s.Credential.Groups) > 0 || s.Credential.NoSetGroups)) {
			return 0, -1, errors.New("fork server: unsupported process attribute")
		}
		req.Cloneflags, req.Setsid, req.Pdeathsig = s.Cloneflags, s.Setsid, s.Pdeathsig
		req.Uids, req.Gids, req.SetGroups = s.UidMappings, s.GidMappings, s.GidMappingsEnableSetgroups
		if s.Credential != nil {
			req.Cred = &[2]uint32{s.Credential.Uid, s.Credential.Gid}
		}
		if s.UseCgroupFD {
			req.CgroupFD = true
			fds = append(fds, s.CgroupFD)
		}
	}
	if len(fds) > maxFDs {
		return 0, -1, fmt.Errorf("fork server: %d fds, at most %d", len(fds), maxFDs)
	}
	b, err := json.Marshal(&req)
	if err != nil {
		return 0, -1, err
	}
	if len(b) > maxMsg {
		return 0, -1, fmt.Errorf("fork server: request of %d bytes, at most %d", len(b), maxMsg)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.waitReadyLocked(); err != nil {
		return 0, -1, err
	}
	if _, _, err := c.conn.WriteMsgUnix(b, unix.UnixRights(fds...), nil); err != nil {
		c.shutdown()
		return 0, -1, fmt.Errorf("%w: %v", ErrServerGone, err)
	}
	n, oobn, _, _, err := c.conn.ReadMsgUnix(c.buf, c.oob)
	if err == nil && n == 0 {
		err = errors.New("EOF")
	}
	if err != nil {
		c.shutdown()
		return 0, -1, fmt.Errorf("%w: %v", ErrServerGone, err)
	}
	got, perr := parseFDs(c.oob[:oobn])
	var rep reply
	if err := json.Unmarshal(c.buf[:n], &rep); err != nil || perr != nil {
		for _, fd := range got {
			unix.Close(fd)
		}
		c.shutdown()
		return 0, -1, fmt.Errorf("%w: bad reply", ErrServerGone)
	}
	switch {
	case rep.Errno != 0:
		return 0, -1, syscall.Errno(rep.Errno)
	case rep.Err != "":
		return 0, -1, errors.New(rep.Err)
	case len(got) != 1 || rep.Pid <= 0:
		for _, fd := range got {
			unix.Close(fd)
		}
		return 0, -1, fmt.Errorf("fork server: reply with pid %d and %d fds", rep.Pid, len(got))
	}
	return rep.Pid, got[0], nil
}

// Close closes the host's end, also under a call that waits for the
// server; the server then exits. Idempotent.
func (c *Client) Close() error {
	c.shutdown()
	return nil
}

func (c *Client) shutdown() {
	if !c.closed.Swap(true) {
		c.conn.Close()
	}
}
