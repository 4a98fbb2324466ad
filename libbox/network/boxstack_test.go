package network

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// testBox is an in-process box: a second netstack whose frames travel
// over a SOCK_SEQPACKET pair to the network (one frame per read, like a
// tap fd).
type testBox struct {
	t     *testing.T
	s     *stack.Stack
	ep    *channel.Endpoint
	fd    *os.File
	src   netip.Addr
	wg    sync.WaitGroup
	stop  context.CancelFunc
	wmu   sync.Mutex
	close sync.Once
}

var boxMAC, _ = net.ParseMAC(BoxMAC)
var gwMAC, _ = net.ParseMAC(GatewayMAC)

// newTestBox attaches an in-process box with address src to n.
func newTestBox(t *testing.T, n *Network, src netip.Addr) *testBox {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds { // room for bursts: fewer drops, fewer retransmits
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	if err := n.Attach(os.NewFile(uintptr(fds[0]), "net"), FramePerRead); err != nil {
		t.Fatal(err)
	}
	b := &testBox{t: t, fd: os.NewFile(uintptr(fds[1]), "box"), src: src}
	b.ep = channel.New(4096, 1500, "")
	b.s = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	if e := b.s.CreateNIC(1, b.ep); e != nil {
		t.Fatal(e)
	}
	b.s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddrFrom4(src.As4()).WithPrefix()}, stack.AddressProperties{})
	b.s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, Gateway: tcpip.AddrFrom4(GatewayIP.As4()), NIC: 1}})
	ctx, cancel := context.WithCancel(context.Background())
	b.stop = cancel
	b.wg.Add(2)
	go b.in()
	go b.out(ctx)
	t.Cleanup(b.Close)
	return b
}

func (b *testBox) Close() {
	b.close.Do(func() {
		b.stop()
		b.fd.Close()
		b.wg.Wait()
		b.s.Close()
		b.s.Wait()
		b.ep.Close()
	})
}

func (b *testBox) write(frame []byte) {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	_, _ = b.fd.Write(frame)
}

// in reads the network's frames: answers ARP for the box address, hands
// IPv4 to the stack.
func (b *testBox) in() {
	defer b.wg.Done()
	buf := make([]byte, 70000)
	for {
		k, err := b.fd.Read(buf)
		if err != nil {
			return
		}
		f := buf[:k]
		if k < 14 {
			continue
		}
		switch binary.BigEndian.Uint16(f[12:14]) {
		case uint16(header.ARPProtocolNumber):
			arp := header.ARP(f[14:])
			if arp.IsValid() && arp.Op() == header.ARPRequest && netip.AddrFrom4([4]byte(arp.ProtocolAddressTarget())) == b.src {
				reply := make([]byte, 14+header.ARPSize)
				copy(reply[0:6], f[6:12])
				copy(reply[6:12], boxMAC)
				binary.BigEndian.PutUint16(reply[12:14], uint16(header.ARPProtocolNumber))
				r := header.ARP(reply[14:])
				r.SetIPv4OverEthernet()
				r.SetOp(header.ARPReply)
				copy(r.HardwareAddressSender(), boxMAC)
				copy(r.ProtocolAddressSender(), arp.ProtocolAddressTarget())
				copy(r.HardwareAddressTarget(), arp.HardwareAddressSender())
				copy(r.ProtocolAddressTarget(), arp.ProtocolAddressSender())
				b.write(reply)
			}
		case uint16(header.IPv4ProtocolNumber):
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(f[14:])})
			b.ep.InjectInbound(ipv4.ProtocolNumber, pkt)
			pkt.DecRef()
		}
	}
}

// out sends the stack's packets to the gateway.
func (b *testBox) out(ctx context.Context) {
	defer b.wg.Done()
	for {
		pkt := b.ep.ReadContext(ctx)
		if pkt == nil {
			return
		}
		v := pkt.ToView()
		frame := make([]byte, 14, 14+v.Size())
		copy(frame[0:6], gwMAC)
		copy(frame[6:12], boxMAC)
		binary.BigEndian.PutUint16(frame[12:14], uint16(pkt.NetworkProtocolNumber))
		frame = append(frame, v.AsSlice()...)
		v.Release()
		pkt.DecRef()
		b.write(frame)
	}
}

func (b *testBox) dialTCP(ctx context.Context, addr string) (net.Conn, error) {
	ap := netip.MustParseAddrPort(addr)
	return gonet.DialContextTCP(ctx, b.s, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(ap.Addr().As4()), Port: ap.Port()}, ipv4.ProtocolNumber)
}

func (b *testBox) dialUDP(addr string) (net.Conn, error) {
	ap := netip.MustParseAddrPort(addr)
	return gonet.DialUDP(b.s, nil, &tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(ap.Addr().As4()), Port: ap.Port()}, ipv4.ProtocolNumber)
}

// listenTCP listens in the box.
func (b *testBox) listenTCP(port uint16) net.Listener {
	l, err := gonet.ListenTCP(b.s, tcpip.FullAddress{NIC: 1, Port: port}, ipv4.ProtocolNumber)
	if err != nil {
		b.t.Fatal(err)
	}
	return l
}

func (b *testBox) listenUDP(port uint16) *gonet.UDPConn {
	c, err := gonet.DialUDP(b.s, &tcpip.FullAddress{NIC: 1, Port: port}, nil, ipv4.ProtocolNumber)
	if err != nil {
		b.t.Fatal(err)
	}
	return c
}

// resolver asks the gateway's DNS from the box.
func (b *testBox) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		if network == "tcp" || network == "tcp4" {
			return b.dialTCP(ctx, GatewayIP.String()+":53")
		}
		return b.dialUDP(GatewayIP.String() + ":53")
	}}
}
