package network

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"

	"github.com/libbox/libbox/errdefs"
)

// PortMapping publishes a box port on the host.
type PortMapping struct {
	// Host is the host address: "IP:PORT", ":PORT" or "PORT" (IP
	// 127.0.0.1), port 0 for any free port. Box info reports the real one.
	Host string `json:"host"`
	// Box is the port in the box.
	Box int `json:"box"`
	// Protocol is "tcp" (default) or "udp".
	Protocol string `json:"protocol,omitempty"`
}

// normalize validates m and fills in the defaults.
func (m PortMapping) normalize() (PortMapping, netip.AddrPort, error) {
	if m.Protocol == "" {
		m.Protocol = "tcp"
	}
	m.Protocol = strings.ToLower(m.Protocol)
	if m.Protocol != "tcp" && m.Protocol != "udp" {
		return m, netip.AddrPort{}, errdefs.New(errdefs.InvalidArgument, "port %q: protocol %q: want tcp or udp", m.Host, m.Protocol)
	}
	if m.Box < 1 || m.Box > 65535 {
		return m, netip.AddrPort{}, errdefs.New(errdefs.InvalidArgument, "port %q: box port %d: want 1-65535", m.Host, m.Box)
	}
	h := strings.TrimSpace(m.Host)
	if h == "" {
		h = "0"
	}
	if !strings.Contains(h, ":") {
		h = ":" + h
	}
	if strings.HasPrefix(h, ":") {
		h = "127.0.0.1" + h
	}
	ap, err := netip.ParseAddrPort(h)
	if err != nil {
		return m, netip.AddrPort{}, errdefs.New(errdefs.InvalidArgument, "port %q: want IP:PORT, :PORT or PORT (port 0: any free port)", m.Host)
	}
	m.Host = ap.String()
	return m, ap, nil
}

// published is one published port.
type published struct {
	m     PortMapping
	close func()
}

func portKey(m PortMapping) string { return m.Protocol + "/" + m.Host }

// Publish listens on the host and forwards to the box port. It returns the
// mapping with the host address actually bound.
func (n *Network) Publish(m PortMapping) (PortMapping, error) {
	m, ap, err := m.normalize()
	if err != nil {
		return m, err
	}
	to := tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(BoxIP.As4()), Port: uint16(m.Box)}
	p := &published{}
	if m.Protocol == "tcp" {
		l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
		if err != nil {
			return m, errdefs.Wrap(errdefs.Unavailable, err, "publish %s", m.Host)
		}
		m.Host = l.Addr().String()
		p.close = func() { l.Close() }
		p.m = m
		if err := n.addPort(p); err != nil {
			return m, err
		}
		n.goTrack(func() { n.serveTCPPort(l, to) })
		return m, nil
	}
	uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return m, errdefs.Wrap(errdefs.Unavailable, err, "publish %s/udp", m.Host)
	}
	m.Host = uc.LocalAddr().String()
	p.m = m
	flows := &udpFlows{m: map[string]*gonet.UDPConn{}}
	p.close = func() { uc.Close(); flows.closeAll() }
	if err := n.addPort(p); err != nil {
		return m, err
	}
	n.goTrack(func() { n.serveUDPPort(uc, to, flows) })
	return m, nil
}

func (n *Network) addPort(p *published) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		p.close()
		return errdefs.New(errdefs.FailedPrecondition, "network is closed")
	}
	if _, ok := n.ports[portKey(p.m)]; ok {
		p.close()
		return errdefs.New(errdefs.AlreadyExists, "port %s/%s is already published", p.m.Host, p.m.Protocol)
	}
	n.ports[portKey(p.m)] = p
	return nil
}

// Unpublish stops forwarding a published port, named by its host address
// (as Info reports it) and protocol, or by its box port when Host is empty.
func (n *Network) Unpublish(m PortMapping) error {
	if m.Protocol == "" {
		m.Protocol = "tcp"
	}
	n.mu.Lock()
	var found *published
	for k, p := range n.ports {
		if p.m.Protocol != strings.ToLower(m.Protocol) {
			continue
		}
		if m.Host != "" && !sameHost(p.m.Host, m.Host) || m.Host == "" && p.m.Box != m.Box {
			continue
		}
		found = p
		delete(n.ports, k)
		break
	}
	n.mu.Unlock()
	if found == nil {
		return errdefs.New(errdefs.NotFound, "no published port %s (box %d, %s)", m.Host, m.Box, m.Protocol)
	}
	found.close()
	return nil
}

func sameHost(have, want string) bool {
	if have == want {
		return true
	}
	if _, err := strconv.Atoi(strings.TrimPrefix(want, ":")); err == nil {
		_, port, _ := net.SplitHostPort(have)
		return port == strings.TrimPrefix(want, ":")
	}
	return false
}

// serveTCPPort forwards each host connection to the box port.
func (n *Network) serveTCPPort(l *net.TCPListener, to tcpip.FullAddress) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		n.goTrack(func() {
			ctx, cancel := context.WithTimeout(n.ctx, n.cfg.DialTimeout)
			box, err := gonet.DialContextTCP(ctx, n.stack, to, ipv4.ProtocolNumber)
			cancel()
			if err != nil {
				c.Close()
				return
			}
			n.pipe(box, c, nil)
		})
	}
}

// udpFlows are the box sockets of a published UDP port, by client.
type udpFlows struct {
	mu     sync.Mutex
	m      map[string]*gonet.UDPConn // guarded by mu
	closed bool                      // guarded by mu
}

func (f *udpFlows) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for k, c := range f.m {
		c.Close()
		delete(f.m, k)
	}
}

// serveUDPPort relays datagrams of host clients to the box port, one box
// socket per client, replies back to that client.
func (n *Network) serveUDPPort(uc *net.UDPConn, to tcpip.FullAddress, flows *udpFlows) {
	defer flows.closeAll()
	buf := make([]byte, 65536)
	for {
		k, from, err := uc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		key := from.String()
		flows.mu.Lock()
		box := flows.m[key]
		if box == nil && !flows.closed {
			box, err = gonet.DialUDP(n.stack, nil, &to, ipv4.ProtocolNumber)
			if err == nil {
				flows.m[key] = box
				if !n.goTrack(func() { n.udpReplies(uc, box, from, flows, key) }) {
					box.Close()
					delete(flows.m, key)
					box = nil
				}
			}
		}
		flows.mu.Unlock()
		if box != nil {
			_, _ = box.Write(buf[:k])
		}
	}
}

func (n *Network) udpReplies(uc *net.UDPConn, box *gonet.UDPConn, to netip.AddrPort, flows *udpFlows, key string) {
	defer func() {
		flows.mu.Lock()
		if flows.m[key] == box {
			delete(flows.m, key)
		}
		flows.mu.Unlock()
		box.Close()
	}()
	buf := make([]byte, 65536)
	for {
		_ = box.SetReadDeadline(time.Now().Add(udpIdle))
		k, err := box.Read(buf)
		if err != nil {
			return
		}
		if _, err := uc.WriteToUDPAddrPort(buf[:k], to); err != nil {
			return
		}
	}
}
