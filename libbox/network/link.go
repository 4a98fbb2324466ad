package network

import (
	"bufio"
	"encoding/binary"
	"io"
	"net/netip"
	"strconv"

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

	wbuf []byte // guarded by Network.wmu
}

const maxFrame = 65536 + header.EthernetMinimumSize

// DeliverNetworkPacket writes a frame of the gateway to the box (the
// stack's link endpoint calls it, serialized by n.wmu).
func (n *Network) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	n.wmu.Lock()
	defer n.wmu.Unlock()
	n.mu.Lock()
	l := n.link
	n.mu.Unlock()
	if l == nil {
		return
	}
	v := pkt.ToView()
	defer v.Release()
	b := v.AsSlice()
	if l.stream {
		l.wbuf = binary.BigEndian.AppendUint32(l.wbuf[:0], uint32(len(b)))
		l.wbuf = append(l.wbuf, b...)
		b = l.wbuf
	}
	if _, err := l.c.Write(b); err == nil {
		n.tx.Add(uint64(len(b)))
	}
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
			var hdr [4]byte
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				return
			}
			size := binary.BigEndian.Uint32(hdr[:])
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
