package network

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// sniffTimeout bounds how long a connection on port 80 or 443 may take to
// show its HTTP Host or TLS SNI.
const sniffTimeout = 10 * time.Second

// udpIdle ends a forwarded UDP flow after this long without a datagram.
const udpIdle = 60 * time.Second

func endpointDst(id stack.TransportEndpointID) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4(id.LocalAddress.As4()), id.LocalPort)
}

// target is where the host dials for dst, or a reason to refuse.
func (n *Network) target(proto string, dst netip.AddrPort) (string, verdict, string) {
	switch {
	case dst.Addr() == HostIP:
		if !n.pol.hostAllowed(dst.Port()) {
			return "", deny, "the host's loopback (allow \"host\" to reach it as " + HostName + ")"
		}
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(dst.Port()))), allow, ""
	case Subnet.Contains(dst.Addr()):
		return "", deny, "the gateway serves DNS only"
	}
	v, why := n.pol.checkAddr(dst, time.Now())
	return dst.String(), v, why
}

// forwardTCP handles a SYN of the box (in a goroutine of the stack).
func (n *Network) forwardTCP(r *tcp.ForwarderRequest) {
	if !n.enter() {
		r.Complete(true)
		return
	}
	defer n.wg.Done()
	dst := endpointDst(r.ID())
	to, v, why := n.target("tcp", dst)
	if v == deny {
		n.deny("tcp", dst.String(), why)
		r.Complete(true) // reset at once: the caller fails fast
		return
	}
	if v == allow {
		// Dial first, so a refused or unreachable destination reads as one.
		up, err := n.dial("tcp", to)
		if err != nil {
			r.Complete(true)
			return
		}
		box, _, err := n.accept(r)
		if err != nil {
			up.Close()
			return
		}
		n.pipe(box, up, nil)
		return
	}
	// needName: the box must say which name it wants first.
	box, ep, err := n.accept(r)
	if err != nil {
		return
	}
	_ = box.SetReadDeadline(time.Now().Add(sniffTimeout))
	name, head, err := sniffName(box, dst.Port())
	_ = box.SetReadDeadline(time.Time{})
	if err != nil || name == "" || !n.nameOK(name, dst) {
		reason := "no HTTP Host or TLS SNI naming an allowed name"
		if name != "" {
			reason = "name " + strconv.Quote(name) + " not allowed"
		}
		n.deny("tcp", dst.String(), reason)
		reset(box, ep)
		return
	}
	up, err := n.dial("tcp", to)
	if err != nil {
		reset(box, ep)
		return
	}
	n.pipe(box, up, head)
}

// nameOK: a name the box showed (Host, SNI) must be allowed on the port;
// an address literal must be dst itself, allowed by address.
func (n *Network) nameOK(name string, dst netip.AddrPort) bool {
	if a, err := netip.ParseAddr(name); err == nil {
		return a == dst.Addr() && n.pol.addrRuleAllows(dst)
	}
	return n.pol.nameAllowed(name, dst.Port())
}

func (n *Network) dial(network, to string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.DialTimeout)
	defer cancel()
	return n.dialer.DialContext(ctx, network, to)
}

// accept completes the box's handshake.
func (n *Network) accept(r *tcp.ForwarderRequest) (*gonet.TCPConn, tcpip.Endpoint, error) {
	var wq waiter.Queue
	ep, e := r.CreateEndpoint(&wq)
	r.Complete(false)
	if e != nil {
		return nil, nil, errors.New(errString(e))
	}
	ep.SocketOptions().SetKeepAlive(true)
	return gonet.NewTCPConn(&wq, ep), ep, nil
}

// reset ends an accepted box connection with a RST.
func reset(c *gonet.TCPConn, ep tcpip.Endpoint) {
	ep.Abort()
	c.Close()
}

// pipe copies both ways between the box's connection and the host's (head
// first) until both directions end. It owns both connections.
func (n *Network) pipe(box, up net.Conn, head []byte) {
	if !n.hold(box) {
		up.Close()
		return
	}
	if !n.hold(up) {
		n.release(box)
		return
	}
	var wg sync.WaitGroup
	cp := func(dst, src net.Conn, head []byte) {
		defer wg.Done()
		if len(head) > 0 {
			if _, err := dst.Write(head); err != nil {
				return
			}
		}
		copyStream(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}
	wg.Add(2)
	if !n.goTrack(func() { cp(up, box, head) }) {
		wg.Done()
	}
	if !n.goTrack(func() { cp(box, up, nil) }) {
		wg.Done()
	}
	wg.Wait()
	n.release(box)
	n.release(up)
}

// A forwarded connection copies with a small buffer while it is quiet and
// a large one while a read fills the small one (a bulk transfer: a read of
// the host's socket then takes up to copyBufSize at once, which the box's
// side sends as segments of up to the link's MTU). Idle connections thus
// hold little memory.
const (
	copyBufSmall = 32 << 10
	copyBufSize  = 256 << 10
)

var copyBufs = sync.Pool{New: func() any { return new([copyBufSize]byte) }}

// copyStream copies src to dst until either ends. (io.Copy would hand a
// *net.TCPConn source its WriteTo, which copies in 32 KiB pieces.)
func copyStream(dst io.Writer, src io.Reader) {
	small := make([]byte, copyBufSmall)
	buf := small
	var big *[copyBufSize]byte
	defer func() {
		if big != nil {
			copyBufs.Put(big)
		}
	}()
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
		switch {
		case big == nil && k == len(buf):
			big = copyBufs.Get().(*[copyBufSize]byte)
			buf = big[:]
		case big != nil && k < copyBufSmall:
			copyBufs.Put(big)
			big, buf = nil, small
		}
	}
}

// forwardUDP handles the first datagram of a flow (on the stack's
// goroutine: it must not block).
func (n *Network) forwardUDP(r *udp.ForwarderRequest) {
	dst := endpointDst(r.ID())
	to, v, why := n.target("udp", dst)
	if v == needName {
		why = "UDP to port 80/443 needs an address rule (QUIC names are not checked)"
	}
	if v != allow {
		n.deny("udp", dst.String(), why)
		return
	}
	var wq waiter.Queue
	ep, e := r.CreateEndpoint(&wq)
	if e != nil {
		return
	}
	box := gonet.NewUDPConn(&wq, ep)
	if !n.goTrack(func() { n.udpFlow(box, to) }) {
		box.Close()
	}
}

func (n *Network) udpFlow(box *gonet.UDPConn, to string) {
	up, err := n.dial("udp", to)
	if err != nil {
		box.Close()
		return
	}
	n.udpPipe(box, up)
}

// udpPipe relays datagrams between two connected UDP sockets until one
// side is quiet for udpIdle or fails. It owns both.
func (n *Network) udpPipe(a, b net.Conn) {
	if !n.hold(a) {
		b.Close()
		return
	}
	if !n.hold(b) {
		n.release(a)
		return
	}
	var wg sync.WaitGroup
	relay := func(dst, src net.Conn) {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			_ = src.SetReadDeadline(time.Now().Add(udpIdle))
			k, err := src.Read(buf)
			if err != nil {
				dst.Close()
				src.Close()
				return
			}
			if _, err := dst.Write(buf[:k]); err != nil && !isTemporary(err) {
				src.Close()
				return
			}
		}
	}
	wg.Add(2)
	if !n.goTrack(func() { relay(b, a) }) {
		wg.Done()
	}
	if !n.goTrack(func() { relay(a, b) }) {
		wg.Done()
	}
	wg.Wait()
	n.release(a)
	n.release(b)
}

func isTemporary(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
