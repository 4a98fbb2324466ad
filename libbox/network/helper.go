package network

// A detached box's network lives in a process of its own, box-netd (the
// network helper), so that it outlives the process that started the box.
// This is its contract, the same for every backend:
//
//   - A link is an fd plus a framing. FramePerRead: every read and write is
//     one Ethernet frame, no header (a tap fd: the sandbox backend).
//     FrameLength32: a stream socket, each frame after its 4-byte big-endian
//     length (QEMU's -netdev stream on a socketpair: the VM backend). A
//     backend hands its host end to backend.NetworkLink.Attach and never
//     knows whether the network runs in this process (Network.Attach) or
//     in a helper (Helper.Attach, which passes the fd with SCM_RIGHTS).
//   - StartHelper runs `box-netd DIR`, which re-executes itself in a new
//     session (so no process has to reap it) and reads the box's Config as
//     one JSON line on stdin. It builds the network (publishing the
//     ports), listens on DIR/net.sock (SOCK_SEQPACKET, mode 0600) and
//     writes one JSON reply line on stdout: ready, or the error (after
//     which it exits, and stdout ends only with the process).
//   - Each request is one connection carrying one message (a JSON request,
//     plus the link fd for "attach") answered by one message; any process
//     may connect, so a later process of the same user follows the box's
//     network with DialHelper.
//   - The helper exits, releasing every port, when asked ("close": it
//     answers once everything is released, and the connection ends when
//     the process does), when its link ends (the box's network namespace
//     or QEMU went away), or when its stdin closes before a link was
//     attached (the starting process died half-way).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
)

// HelperSocket is the helper's control socket, in the box's directory.
const HelperSocket = "net.sock"

// helperTimeout bounds one request to the helper.
const helperTimeout = 30 * time.Second

// infoTimeout bounds an info request: box info must not wait long for a
// helper that does not answer.
const infoTimeout = 2 * time.Second

// helperConfig is Config on the wire (Config holds functions).
type helperConfig struct {
	Allow []string          `json:"allow,omitempty"`
	Deny  []string          `json:"deny,omitempty"`
	Hosts map[string]string `json:"hosts,omitempty"`
	DNS   []string          `json:"dns,omitempty"`
	Ports []PortMapping     `json:"ports,omitempty"`
	MTU   int               `json:"mtu,omitempty"`
}

type helperRequest struct {
	Op      string       `json:"op"` // attach, publish, unpublish, info, close
	Framing Framing      `json:"framing,omitempty"`
	Port    *PortMapping `json:"port,omitempty"`
}

type helperReply struct {
	Code  string       `json:"code,omitempty"` // errdefs class name
	Error string       `json:"error,omitempty"`
	Port  *PortMapping `json:"port,omitempty"`
	Info  *Info        `json:"info,omitempty"`
}

func replyOf(err error) helperReply {
	if err == nil {
		return helperReply{}
	}
	return helperReply{Code: errdefs.CodeOf(err).String(), Error: err.Error()}
}

func (r helperReply) err() error {
	if r.Code == "" && r.Error == "" {
		return nil
	}
	return errdefs.New(errdefs.ByName(r.Code), "%s", r.Error)
}

// ServeHelper is box-netd's work (see the contract above): the Config
// from in, the readiness reply on out (closed afterwards), then requests
// on DIR/net.sock until the network ends.
func ServeHelper(dir string, in io.Reader, out io.WriteCloser, logf func(string, ...any)) error {
	br := bufio.NewReader(in)
	n, ln, err := startHelper(dir, br, logf)
	_ = json.NewEncoder(out).Encode(replyOf(err))
	if err != nil {
		// out stays open until the process exits: its end is how the
		// starter knows a helper that failed is gone.
		return err
	}
	out.Close()
	defer n.Close()
	defer ln.Close() // unlinks the socket

	var quitOnce, attachOnce sync.Once
	quit, attached := make(chan struct{}), make(chan struct{})
	stop := func() { quitOnce.Do(func() { close(quit) }) }
	go func() {
		_, _ = io.Copy(io.Discard, br)
		select {
		case <-attached:
		default:
			logf("box-netd: the starting process went away before attaching the box")
			stop()
		}
	}()
	go func() {
		select {
		case <-n.LinkDone():
			stop()
		case <-quit:
		}
	}()
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				stop()
				return
			}
			go serveHelperConn(n, c, func() { attachOnce.Do(func() { close(attached) }) }, stop)
		}
	}()
	<-quit
	return nil
}

func startHelper(dir string, br *bufio.Reader, logf func(string, ...any)) (*Network, *net.UnixListener, error) {
	line, err := br.ReadBytes('\n')
	if err != nil {
		return nil, nil, errdefs.Wrap(errdefs.InvalidArgument, err, "box-netd: no configuration on stdin")
	}
	var hc helperConfig
	if err := json.Unmarshal(line, &hc); err != nil {
		return nil, nil, errdefs.Wrap(errdefs.InvalidArgument, err, "box-netd: configuration")
	}
	n, err := New(Config{Allow: hc.Allow, Deny: hc.Deny, Hosts: hc.Hosts, DNS: hc.DNS, Ports: hc.Ports, MTU: hc.MTU, Logf: logf})
	if err != nil {
		return nil, nil, err
	}
	sock := filepath.Join(dir, HelperSocket)
	_ = os.Remove(sock)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err == nil {
		if err = os.Chmod(sock, 0o600); err != nil {
			ln.Close()
		}
	}
	if err != nil {
		n.Close()
		return nil, nil, errdefs.Wrap(errdefs.Internal, err, "box-netd: control socket")
	}
	return n, ln, nil
}

// serveHelperConn answers the one request of c.
func serveHelperConn(n *Network, c *net.UnixConn, attached, stop func()) {
	keep := false
	defer func() {
		if !keep {
			c.Close()
		}
	}()
	_ = c.SetDeadline(time.Now().Add(helperTimeout))
	buf, oob := make([]byte, 64<<10), make([]byte, unix.CmsgSpace(4))
	k, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return
	}
	var fds []int
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			got, _ := unix.ParseUnixRights(&m)
			fds = append(fds, got...)
		}
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	var req helperRequest
	var rep helperReply
	if err := json.Unmarshal(buf[:k], &req); err != nil {
		rep = replyOf(errdefs.Wrap(errdefs.InvalidArgument, err, "box-netd: request"))
	} else {
		switch req.Op {
		case "attach":
			if len(fds) != 1 {
				rep = replyOf(errdefs.New(errdefs.InvalidArgument, "box-netd: attach carries one fd, got %d", len(fds)))
				break
			}
			f := os.NewFile(uintptr(fds[0]), "link")
			fds = nil
			if err := n.Attach(f, req.Framing); err != nil {
				rep = replyOf(err)
				break
			}
			attached()
		case "publish", "unpublish":
			if req.Port == nil {
				rep = replyOf(errdefs.New(errdefs.InvalidArgument, "box-netd: %s without a port", req.Op))
			} else if req.Op == "publish" {
				m, err := n.Publish(*req.Port)
				rep = replyOf(err)
				rep.Port = &m
			} else {
				rep = replyOf(n.Unpublish(*req.Port))
			}
		case "info":
			info := n.Info()
			rep.Info = &info
		case "close":
			n.Close()
			keep = true // ends with the process: the caller waits for that
			defer stop()
		default:
			rep = replyOf(errdefs.New(errdefs.InvalidArgument, "box-netd: unknown request %q", req.Op))
		}
	}
	b, _ := json.Marshal(rep)
	_, _ = c.Write(b)
}

// Helper is a handle on a box's network helper: from the process that
// started it (StartHelper) or a later one (DialHelper). It holds no
// goroutine; Release drops it, Close ends the helper.
type Helper struct {
	sock string
	mu   sync.Mutex
	// stdin is the helper's stdin until a link is attached (the starting
	// process only). Guarded by mu.
	stdin *os.File
	// last is the helper's last answer to info (nil: none yet). Guarded
	// by mu.
	last *Info
}

// StartHelper starts the network helper bin of the box whose directory is
// dir (its log goes to dir/net.log) and returns once the network is
// built and its ports are published, or failed to.
func StartHelper(ctx context.Context, bin, dir string, cfg Config) (*Helper, error) {
	hc, _ := json.Marshal(helperConfig{Allow: cfg.Allow, Deny: cfg.Deny, Hosts: cfg.Hosts, DNS: cfg.DNS, Ports: cfg.Ports, MTU: cfg.MTU})
	logf, err := os.OpenFile(filepath.Join(dir, "net.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "network helper log")
	}
	defer logf.Close()
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "network helper")
	}
	defer inR.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		inW.Close()
		return nil, errdefs.Wrap(errdefs.Internal, err, "network helper")
	}
	defer outR.Close()
	cmd := exec.Command(bin, dir)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = startHelperProcess(cmd) // waited for below, not there
	outW.Close()
	if err == nil {
		err = cmd.Wait() // the launcher: it exits once the helper runs
	}
	if err != nil {
		inW.Close()
		return nil, errdefs.Wrap(errdefs.Unavailable, err, "start the network helper %s (see %s/net.log)", bin, dir)
	}
	h := &Helper{sock: filepath.Join(dir, HelperSocket), stdin: inW}
	if _, err := inW.Write(append(hc, '\n')); err != nil {
		inW.Close()
		return nil, errdefs.Wrap(errdefs.Unavailable, err, "the network helper exited (see %s/net.log)", dir)
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(helperTimeout)
	}
	_ = outR.SetReadDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = outR.SetReadDeadline(time.Now()) })
	defer stop()
	line, err := bufio.NewReader(outR).ReadBytes('\n')
	var rep helperReply
	if err == nil {
		err = json.Unmarshal(line, &rep)
	}
	if err != nil {
		_ = h.Close() // it may be running: ask it to end
		inW.Close()
		if ctx.Err() != nil {
			return nil, errdefs.Wrap(errdefs.CodeOf(ctx.Err()), ctx.Err(), "start the network helper")
		}
		return nil, errdefs.Wrap(errdefs.Unavailable, err, "the network helper did not start (see %s/net.log)", dir)
	}
	if err := rep.err(); err != nil {
		inW.Close()
		// The helper exits after a failure; its stdout ends with it, so
		// nothing it holds (a port, the socket) outlives the failed start.
		_, _ = io.Copy(io.Discard, outR)
		return nil, err
	}
	return h, nil
}

// DialHelper returns a handle on the helper of the box whose directory is
// dir, NotFound when there is none. A helper that is there but does not
// answer within infoTimeout is followed all the same: its box's info says
// so (Info.Unavailable).
func DialHelper(dir string) (*Helper, error) {
	h := &Helper{sock: filepath.Join(dir, HelperSocket)}
	if _, err := h.info(); errdefs.IsNotFound(err) {
		return nil, err
	}
	return h, nil
}

// call sends one request (with f's fd when f is not nil) and returns the
// reply; "close" also waits for the helper to end the connection.
func (h *Helper) call(req helperRequest, f *os.File) (helperReply, error) {
	return h.callTimeout(req, f, helperTimeout)
}

func (h *Helper) callTimeout(req helperRequest, f *os.File, timeout time.Duration) (helperReply, error) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: h.sock, Net: "unixpacket"})
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) {
			return helperReply{}, errdefs.New(errdefs.NotFound, "the box's network helper is gone (%s)", h.sock)
		}
		return helperReply{}, errdefs.Wrap(errdefs.Unavailable, err, "the box's network helper")
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	b, _ := json.Marshal(req)
	var oob []byte
	if f != nil {
		oob = unix.UnixRights(int(f.Fd()))
	}
	if _, _, err := c.WriteMsgUnix(b, oob, nil); err != nil {
		return helperReply{}, errdefs.Wrap(errdefs.Unavailable, err, "the box's network helper")
	}
	buf := make([]byte, 1<<20)
	k, err := c.Read(buf)
	var rep helperReply
	if err == nil {
		err = json.Unmarshal(buf[:k], &rep)
	}
	if err != nil {
		return helperReply{}, errdefs.Wrap(errdefs.Unavailable, err, "the box's network helper did not answer %s", req.Op)
	}
	if req.Op == "close" {
		_, _ = c.Read(buf) // EOF once the helper has exited
	}
	return rep, rep.err()
}

// Attach hands the box end of the link to the helper (f is closed here).
func (h *Helper) Attach(f *os.File, framing Framing) error {
	defer f.Close()
	if _, err := h.call(helperRequest{Op: "attach", Framing: framing}, f); err != nil {
		return err
	}
	h.mu.Lock()
	if h.stdin != nil {
		h.stdin.Close()
		h.stdin = nil
	}
	h.mu.Unlock()
	return nil
}

// Publish is Network.Publish, in the helper.
func (h *Helper) Publish(m PortMapping) (PortMapping, error) {
	rep, err := h.call(helperRequest{Op: "publish", Port: &m}, nil)
	if err != nil || rep.Port == nil {
		return m, err
	}
	return *rep.Port, nil
}

// Unpublish is Network.Unpublish, in the helper.
func (h *Helper) Unpublish(m PortMapping) error {
	_, err := h.call(helperRequest{Op: "unpublish", Port: &m}, nil)
	return err
}

// Info is Network.Info, from the helper. When the helper does not answer
// within infoTimeout, it is its last answer (or the link's fixed facts)
// with Unavailable saying why.
func (h *Helper) Info() Info {
	info, err := h.info()
	if err == nil {
		return info
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.last != nil {
		info = h.last.clone()
	} else {
		info = Info{Address: netip.PrefixFrom(BoxIP, Subnet.Bits()).String(), Gateway: GatewayIP.String(), Ports: []PortMapping{}}
	}
	info.Unavailable = err.Error()
	return info
}

// info asks the helper, bounded by infoTimeout, and keeps the answer.
func (h *Helper) info() (Info, error) {
	rep, err := h.callTimeout(helperRequest{Op: "info"}, nil, infoTimeout)
	if err == nil && rep.Info == nil {
		err = errdefs.New(errdefs.Unavailable, "the box's network helper answered info without it")
	}
	if err != nil {
		return Info{}, err
	}
	h.mu.Lock()
	h.last = rep.Info
	h.mu.Unlock()
	return rep.Info.clone(), nil
}

// clone is a copy of i that shares no slice with it.
func (i *Info) clone() Info {
	c := *i
	c.Recent = append([]Denial(nil), i.Recent...)
	c.Ports = append([]PortMapping{}, i.Ports...)
	return c
}

// Close ends the helper and returns once it has released the box's ports
// and exited. A helper already gone is no error.
func (h *Helper) Close() error {
	_, err := h.call(helperRequest{Op: "close"}, nil)
	h.mu.Lock()
	if h.stdin != nil {
		h.stdin.Close() // (before a link: the helper ends on this too)
		h.stdin = nil
	}
	h.mu.Unlock()
	if err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	return nil
}
