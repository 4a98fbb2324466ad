package network

import (
	"bufio"
	"encoding/binary"
	"io"
	"net/netip"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// link is the one port of a box's network: frames from the box go through
// the ingress filter to the gateway's stack, frames of the stack go to the
// box. (gvisor-tap-vsock's Switch learns MACs for many peers and logs to
// the process-wide logger when a peer goes away; a box has one peer, and
// the network must close quietly.)
type link struct {
	n      *Network
	c      io.ReadWriteCloser
	stream bool
	// rc writes a frame's pieces with one writev (nil: c is no socket or
	// file, frames are copied into wbuf first).
	rc syscall.RawConn

	// The frame being written, guarded by Network.wmu (reused: a frame
	// costs no allocation here).
	wbuf   []byte
	iov    [][]byte
	whdr   [4]byte
	wleft  int
	werr   error
	writev func(fd uintptr) bool

	rhdr [4]byte // owned by readLoop
}

func newLink(n *Network, c io.ReadWriteCloser, stream bool) *link {
	l := &link{n: n, c: c, stream: stream}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			l.rc = rc
		}
	}
	l.writev = l.writevFD
	return l
}

const maxFrame = 65536 + header.EthernetMinimumSize

// DeliverNetworkPacket writes a frame of the gateway to the box (the
// stack's link endpoint calls it, serialized by n.wmu). The frame's pieces
// go out as they are, with one writev: a bulk transfer into the box costs
// no copy here.
func (n *Network) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	l := n.cur.Load()
	if l == nil {
		return
	}
	n.wmu.Lock()
	defer n.wmu.Unlock()
	l.iov = l.iov[:0]
	if l.stream {
		l.iov = append(l.iov, l.whdr[:])
	}
	size := 0
	views, off := pkt.AsViewList()
	for v := views.Front(); v != nil; v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		l.iov = append(l.iov, b[off:])
		size += len(b) - off
		off = 0
	}
	if l.stream {
		binary.BigEndian.PutUint32(l.whdr[:], uint32(size))
		size += len(l.whdr)
	}
	err := l.write(size)
	clear(l.iov) // hold no packet data past its release
	if err == nil {
		n.tx.Add(uint64(size))
	}
}

// write sends the frame in l.iov (size bytes in all).
func (l *link) write(size int) error {
	if l.rc == nil || len(l.iov) == 1 {
		b := l.iov[0]
		if len(l.iov) > 1 {
			l.wbuf = l.wbuf[:0]
			for _, p := range l.iov {
				l.wbuf = append(l.wbuf, p...)
			}
			b = l.wbuf
		}
		_, err := l.c.Write(b)
		return err
	}
	l.wleft, l.werr = size, nil
	if err := l.rc.Write(l.writev); err != nil {
		return err
	}
	return l.werr
}

// writevFD writes l.iov to fd (the RawConn's Write callback).
func (l *link) writevFD(fd uintptr) bool {
	for {
		k, err := unix.Writev(int(fd), l.iov)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false // wait until writable
		case err != nil:
			l.werr = err
			return true
		}
		l.wleft -= k
		if l.wleft <= 0 || !l.stream {
			return true // a frame per write: a short one cannot be continued
		}
		l.iov = advance(l.iov, k)
	}
}

// advance drops the first k bytes of bufs.
func advance(bufs [][]byte, k int) [][]byte {
	for len(bufs) > 0 && k >= len(bufs[0]) {
		k -= len(bufs[0])
		bufs = bufs[1:]
	}
	if len(bufs) > 0 {
		bufs[0] = bufs[0][k:]
	}
	return bufs
}

// readLoop delivers the box's frames until the link closes.
func (l *link) readLoop() {
	defer l.c.Close()
	buf := make([]byte, maxFrame)
	var r *bufio.Reader
	if l.stream {
		r = bufio.NewReaderSize(l.c, 256<<10)
	}
	for {
		var frame []byte
		if l.stream {
			if _, err := io.ReadFull(r, l.rhdr[:]); err != nil {
				return
			}
			size := binary.BigEndian.Uint32(l.rhdr[:])
			if size > maxFrame {
				l.n.logf("libbox: network: frame of %d bytes from the box: closing its link", size)
				return
			}
			if _, err := io.ReadFull(r, buf[:size]); err != nil {
				return
			}
			frame = buf[:size]
		} else {
			k, err := l.c.Read(buf)
			if err != nil {
				return
			}
			frame = buf[:k]
		}
		l.n.rx.Add(uint64(len(frame)))
		l.n.ingress(frame)
	}
}

// ingress filters one frame of the box and hands it to the stack. Only
// ARP and IPv4 from the box's own address pass; of IPv4 only TCP, UDP and
// ICMP to the gateway (everything else has no way out anyway: this makes
// the refusal visible and keeps the stack from answering for addresses it
// does not reach).
func (n *Network) ingress(frame []byte) {
	if len(frame) < header.EthernetMinimumSize {
		return
	}
	eth := header.Ethernet(frame)
	typ := eth.Type()
	payload := frame[header.EthernetMinimumSize:]
	switch typ {
	case header.ARPProtocolNumber:
	case header.IPv4ProtocolNumber:
		ip := header.IPv4(payload)
		if !ip.IsValid(len(payload)) {
			return
		}
		src, dst := netip.AddrFrom4(ip.SourceAddress().As4()), netip.AddrFrom4(ip.DestinationAddress().As4())
		proto := ip.TransportProtocol()
		if proto == header.IGMPProtocolNumber {
			return // multicast membership reports: nothing to refuse
		}
		if src != BoxIP {
			if !(src.IsUnspecified() && proto == header.UDPProtocolNumber) { // DHCP probes
				n.deny(protoName(proto), dst.String(), "spoofed source address "+src.String())
			}
			return
		}
		switch proto {
		case header.TCPProtocolNumber, header.UDPProtocolNumber:
		case header.ICMPv4ProtocolNumber:
			if dst != GatewayIP {
				n.deny("icmp", dst.String(), "ICMP goes no further than the gateway")
				return
			}
		default:
			n.deny(protoName(proto), dst.String(), "only TCP and UDP leave the box")
			return
		}
	default:
		return // IPv6 and the rest: the box has IPv4 only
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(payload)})
	n.ep.DeliverNetworkPacket(typ, pkt)
	pkt.DecRef()
}

func protoName(p tcpip.TransportProtocolNumber) string {
	switch p {
	case header.TCPProtocolNumber:
		return "tcp"
	case header.UDPProtocolNumber:
		return "udp"
	case header.ICMPv4ProtocolNumber:
		return "icmp"
	default:
		return "ip-proto-" + strconv.Itoa(int(p))
	}
}
