// Package network is a box's user-mode network, all on the host: a
// gVisor netstack (from gvisor-tap-vsock's parts) that plays the box's
// gateway, its only DNS server and its way out, with every connection the
// box makes checked against the box's policy before the host dials.
//
// It knows nothing of QEMU or namespaces: a backend hands it the host end
// of the box's link (a tap fd, a socket) with Attach. It must never let a
// frame of the box reach a host socket except through its forwarders, and
// never dial before the policy allowed the destination.
package network

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containers/gvisor-tap-vsock/pkg/tap"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/libbox/libbox/errdefs"
)

// The box's link, the same for every box (each has its own stack).
var (
	Subnet     = netip.MustParsePrefix("192.168.127.0/24")
	GatewayIP  = netip.MustParseAddr("192.168.127.1")
	BoxIP      = netip.MustParseAddr("192.168.127.2")
	HostIP     = netip.MustParseAddr("192.168.127.254") // the host's loopback, as HostName
	GatewayMAC = "5a:94:ef:e4:0c:dd"
	BoxMAC     = "5a:94:ef:e4:0c:ee"
)

// DefaultMTU is the link's MTU unless Config.MTU says otherwise.
const DefaultMTU = 1500

// HostName is the name the gateway's DNS gives the host's loopback when
// the policy allows "host".
const HostName = "host.libbox.internal"

// Config is a box's network: its policy, names and published ports.
type Config struct {
	// Allow: when empty, the public internet; otherwise only what it lists.
	// Entries: NAME, *.SUFFIX, IP, CIDR, "host" or "*", each with :PORT.
	Allow []string
	// Deny wins over Allow (same entries).
	Deny []string
	// Hosts are names the gateway's DNS answers itself (NAME → IPv4).
	Hosts map[string]string
	// DNS are the upstream resolvers (IP or IP:PORT); default: the host's
	// /etc/resolv.conf.
	DNS []string
	// Ports are published at start.
	Ports []PortMapping
	// MTU of the link (default DefaultMTU).
	MTU int
	// DialTimeout bounds each upstream dial (default 10s).
	DialTimeout time.Duration
	// Logf receives one-line warnings (nil: none).
	Logf func(string, ...any)
	// HostAddrs lists the host's own addresses (default: its interfaces).
	HostAddrs func() []netip.Addr
}

// Framing says how frames travel on an attached link.
type Framing int

const (
	// FramePerRead: every read and write is one Ethernet frame (a tap fd).
	FramePerRead Framing = iota
	// FrameLength32: a byte stream, each frame after its 4-byte big-endian
	// length (QEMU's -netdev stream).
	FrameLength32
)

// Denial is one refused attempt of the box.
type Denial struct {
	Time     time.Time `json:"time"`
	Protocol string    `json:"protocol"`
	Dest     string    `json:"dest"`
	Reason   string    `json:"reason"`
}

// Info describes a running network.
type Info struct {
	Address string        `json:"address"` // the box's, with prefix
	Gateway string        `json:"gateway"` // also the box's DNS server
	MTU     int           `json:"mtu"`
	Ports   []PortMapping `json:"ports"`
	Denied  uint64        `json:"denied"`
	Recent  []Denial      `json:"recent_denials,omitempty"`
	RxBytes uint64        `json:"rx_bytes"` // from the box
	TxBytes uint64        `json:"tx_bytes"` // to the box
	// Unavailable, when set, says why the figures above are not current:
	// the network of a detached box lives in its helper process, which
	// did not answer (they are then its last answer to this process, if
	// any).
	Unavailable string `json:"unavailable,omitempty"`
}

const recentDenials = 16

// Network is one box's network. Close releases every goroutine, socket
// and listener it owns.
type Network struct {
	cfg      Config
	pol      *policy
	hosts    map[string]netip.Addr
	upstream []string
	stack    *stack.Stack
	ep       *tap.LinkEndpoint
	ctx      context.Context
	cancel   context.CancelFunc
	dialer   net.Dialer

	denied   atomic.Uint64
	rx, tx   atomic.Uint64
	hostAddr hostAddrCache

	mu sync.Mutex
	// closed is set by Close; nothing new starts after it. Guarded by mu.
	closed bool
	// wg counts every goroutine of the network (and forwarder handlers
	// running in goroutines the stack started). Add under mu, !closed.
	wg sync.WaitGroup
	// conns are the sockets to close on Close. Guarded by mu.
	conns map[io.Closer]struct{}
	// link is the attached box end (nil before Attach). Guarded by mu.
	link *link
	// cur is link, read without mu on every frame to the box.
	cur atomic.Pointer[link]
	// linkDone is closed when the link's reader ends (the box end went away,
	// or Close).
	linkDone chan struct{}
	// ports are the published ports by "proto/host addr". Guarded by mu.
	ports map[string]*published
	// recent are the last denials, oldest first. Guarded by mu.
	recent []Denial
	// wmu serializes frames written to the box.
	wmu sync.Mutex
	// closeOnce makes Close idempotent.
	closeOnce sync.Once
}

// New builds the network (not yet attached to a box) and publishes
// cfg.Ports.
func New(cfg Config) (*Network, error) {
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.MTU < 576 || cfg.MTU > 65000 {
		return nil, errdefs.New(errdefs.InvalidArgument, "network MTU %d: want 576-65000", cfg.MTU)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	n := &Network{cfg: cfg, conns: map[io.Closer]struct{}{}, ports: map[string]*published{}, linkDone: make(chan struct{})}
	n.hostAddr.list = cfg.HostAddrs
	pol, err := newPolicy(cfg.Allow, cfg.Deny, n.hostAddr.get)
	if err != nil {
		return nil, err
	}
	n.pol = pol
	if n.hosts, err = parseHosts(cfg.Hosts); err != nil {
		return nil, err
	}
	if n.upstream, err = upstreams(cfg.DNS); err != nil {
		return nil, err
	}
	n.dialer = net.Dialer{Timeout: cfg.DialTimeout}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if err := n.buildStack(); err != nil {
		n.cancel()
		return nil, err
	}
	if err := n.serveDNS(); err != nil {
		n.Close()
		return nil, err
	}
	for _, p := range cfg.Ports {
		if _, err := n.Publish(p); err != nil {
			n.Close()
			return nil, err
		}
	}
	return n, nil
}

func (n *Network) buildStack() error {
	ep, err := tap.NewLinkEndpoint(false, uint32(n.cfg.MTU), GatewayMAC, GatewayIP.String(), []string{HostIP.String()})
	if err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "network link")
	}
	n.ep = ep
	ep.Connect(n)
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	n.stack = s
	if e := s.CreateNIC(1, ep); e != nil {
		return errdefs.New(errdefs.Internal, "network nic: %s", e)
	}
	for _, a := range []netip.Addr{GatewayIP, HostIP} {
		if e := s.AddProtocolAddress(1, tcpip.ProtocolAddress{
			Protocol:          ipv4.ProtocolNumber,
			AddressWithPrefix: tcpip.AddrFrom4(a.As4()).WithPrefix(),
		}, stack.AddressProperties{}); e != nil {
			return errdefs.New(errdefs.Internal, "network address: %s", e)
		}
	}
	// Every destination arrives here: the forwarders decide.
	s.SetSpoofing(1, true)
	s.SetPromiscuousMode(1, true)
	sub, _ := tcpip.NewSubnet(tcpip.AddrFrom4(Subnet.Addr().As4()), tcpip.MaskFromBytes(net.CIDRMask(Subnet.Bits(), 32)))
	s.SetRouteTable([]tcpip.Route{{Destination: sub, NIC: 1}})
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tcp.NewForwarder(s, 0, 1024, n.forwardTCP).HandlePacket)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, udp.NewForwarder(s, n.forwardUDP).HandlePacket)
	return nil
}

// Attach connects the box end of the link: f (owned by the network from
// now on) carries Ethernet frames as framing says. A box has one link.
func (n *Network) Attach(f *os.File, framing Framing) error {
	// A non-blocking descriptor goes through the runtime's poller, so Close
	// interrupts a pending read.
	fd, err := unix.Dup(int(f.Fd()))
	name := f.Name()
	f.Close()
	if err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "network link")
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return errdefs.Wrap(errdefs.Internal, err, "network link")
	}
	f = os.NewFile(uintptr(fd), name)
	var c io.ReadWriteCloser = f
	if framing == FrameLength32 {
		fc, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return errdefs.Wrap(errdefs.InvalidArgument, err, "network link: not a socket")
		}
		c = fc
	}
	return n.attach(c, framing)
}

func (n *Network) attach(c io.ReadWriteCloser, framing Framing) error {
	l := newLink(n, c, framing == FrameLength32)
	n.mu.Lock()
	if n.closed || n.link != nil {
		n.mu.Unlock()
		c.Close()
		if n.closed {
			return errdefs.New(errdefs.FailedPrecondition, "network is closed")
		}
		return errdefs.New(errdefs.AlreadyExists, "network already has a link")
	}
	n.link = l
	n.cur.Store(l)
	n.wg.Add(1)
	n.mu.Unlock()
	go func() {
		defer n.wg.Done()
		defer close(n.linkDone)
		l.readLoop()
	}()
	return nil
}

// LinkDone is closed once the attached link has ended: the box's end went
// away (its network namespace, or QEMU, is gone) or the network closed.
func (n *Network) LinkDone() <-chan struct{} { return n.linkDone }

// enter registers a goroutine with the network; false once it is closing.
func (n *Network) enter() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.wg.Add(1)
	return true
}

// goTrack runs fn in a goroutine the network waits for.
func (n *Network) goTrack(fn func()) bool {
	if !n.enter() {
		return false
	}
	go func() {
		defer n.wg.Done()
		fn()
	}()
	return true
}

// hold registers c to be closed by Close; false (and c closed) once closing.
func (n *Network) hold(c io.Closer) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		c.Close()
		return false
	}
	n.conns[c] = struct{}{}
	return true
}

func (n *Network) release(c io.Closer) {
	n.mu.Lock()
	delete(n.conns, c)
	n.mu.Unlock()
	c.Close()
}

// deny counts a refused attempt and keeps it among the recent ones.
func (n *Network) deny(proto string, dest, reason string) {
	n.denied.Add(1)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.recent = append(n.recent, Denial{Time: time.Now().UTC(), Protocol: proto, Dest: dest, Reason: reason})
	if len(n.recent) > recentDenials {
		n.recent = n.recent[len(n.recent)-recentDenials:]
	}
}

func (n *Network) logf(format string, args ...any) {
	if n.cfg.Logf != nil {
		n.cfg.Logf(format, args...)
	}
}

// Info describes the network.
func (n *Network) Info() Info {
	n.mu.Lock()
	defer n.mu.Unlock()
	info := Info{
		Address: netip.PrefixFrom(BoxIP, Subnet.Bits()).String(), Gateway: GatewayIP.String(), MTU: n.cfg.MTU,
		Denied: n.denied.Load(), Recent: append([]Denial(nil), n.recent...), RxBytes: n.rx.Load(), TxBytes: n.tx.Load(),
		Ports: []PortMapping{},
	}
	for _, p := range n.ports {
		info.Ports = append(info.Ports, p.m)
	}
	sort.Slice(info.Ports, func(i, j int) bool { return info.Ports[i].Host < info.Ports[j].Host })
	return info
}

// Close tears the network down: published ports, DNS, forwarded
// connections, the link and the stack. It returns once every goroutine of
// the network has ended. Idempotent.
func (n *Network) Close() error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.closed = true
		conns := n.conns
		n.conns = map[io.Closer]struct{}{}
		ports := n.ports
		n.ports = map[string]*published{}
		l := n.link
		n.mu.Unlock()
		n.cancel()
		for _, p := range ports {
			p.close()
		}
		for c := range conns {
			c.Close()
		}
		if l != nil {
			l.c.Close()
		}
		n.stack.Close()
		n.wg.Wait()
		n.stack.Wait()
	})
	return nil
}

// hostAddrCache lists the host's addresses, refreshed every few seconds.
type hostAddrCache struct {
	list func() []netip.Addr

	mu    sync.Mutex
	addrs []netip.Addr // guarded by mu
	at    time.Time    // guarded by mu
}

func (h *hostAddrCache) get() []netip.Addr {
	if h.list != nil {
		return h.list()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if time.Since(h.at) < 5*time.Second {
		return h.addrs
	}
	h.addrs, h.at = HostAddrs(), time.Now()
	return h.addrs
}

// HostAddrs lists the IPv4 addresses of the host's interfaces.
func HostAddrs() []netip.Addr {
	var out []netip.Addr
	as, _ := net.InterfaceAddrs()
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
			out = append(out, p.Addr())
		}
	}
	return out
}

func parseHosts(m map[string]string) (map[string]netip.Addr, error) {
	out := map[string]netip.Addr{}
	for name, ip := range m {
		n := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
		if !validName(n) {
			return nil, errdefs.New(errdefs.InvalidArgument, "network host %q: not a valid name", name)
		}
		a, err := netip.ParseAddr(strings.TrimSpace(ip))
		if err != nil || !a.Is4() {
			return nil, errdefs.New(errdefs.InvalidArgument, "network host %q: %q is not an IPv4 address", name, ip)
		}
		out[n] = a
	}
	return out, nil
}

// upstreams returns the resolvers as host:port: cfg, else /etc/resolv.conf.
func upstreams(cfg []string) ([]string, error) {
	var out []string
	for _, s := range cfg {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.AddrPortFrom(a, 53).String())
			continue
		}
		if ap, err := netip.ParseAddrPort(s); err == nil {
			out = append(out, ap.String())
			continue
		}
		return nil, errdefs.New(errdefs.InvalidArgument, "network DNS server %q: want IP or IP:PORT", s)
	}
	if len(cfg) > 0 {
		return out, nil
	}
	b, _ := os.ReadFile("/etc/resolv.conf")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil {
				out = append(out, netip.AddrPortFrom(a, 53).String())
			}
		}
	}
	return out, nil
}

func errString(e tcpip.Error) string { return fmt.Sprint(e) }
