package network

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"

	"github.com/libbox/libbox/errdefs"
)

const (
	// answerGrace keeps an address reachable a little past its TTL
	// (resolvers in the box cache, connections start late).
	answerGrace = 30 * time.Second
	// maxAnswerTTL bounds how long an upstream answer counts.
	maxAnswerTTL = time.Hour
	// hostsTTL is the TTL of names the gateway answers itself.
	hostsTTL         = 60
	upstreamTimeout  = 4 * time.Second
	dnsTCPIdle       = 10 * time.Second
	answerExpiryTick = 30 * time.Second
)

// serveDNS starts the gateway's DNS server (UDP and TCP port 53).
func (n *Network) serveDNS() error {
	addr := tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(GatewayIP.As4()), Port: 53}
	uc, err := gonet.DialUDP(n.stack, &addr, nil, ipv4.ProtocolNumber)
	if err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "gateway DNS (udp)")
	}
	if !n.hold(uc) {
		return errdefs.New(errdefs.FailedPrecondition, "network is closed")
	}
	tl, err := gonet.ListenTCP(n.stack, addr, ipv4.ProtocolNumber)
	if err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "gateway DNS (tcp)")
	}
	if !n.hold(tl) {
		return errdefs.New(errdefs.FailedPrecondition, "network is closed")
	}
	n.goTrack(func() { n.dnsUDP(uc) })
	n.goTrack(func() { n.dnsTCP(tl) })
	n.goTrack(func() {
		t := time.NewTicker(answerExpiryTick)
		defer t.Stop()
		for {
			select {
			case <-n.ctx.Done():
				return
			case now := <-t.C:
				n.pol.expire(now)
			}
		}
	})
	return nil
}

func (n *Network) dnsUDP(c *gonet.UDPConn) {
	buf := make([]byte, 65535)
	for {
		k, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		q := append([]byte(nil), buf[:k]...)
		n.goTrack(func() {
			if out := n.answerWire(q, 512); out != nil {
				_, _ = c.WriteTo(out, from)
			}
		})
	}
}

func (n *Network) dnsTCP(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		if !n.hold(c) {
			return
		}
		n.goTrack(func() {
			defer n.release(c)
			for {
				_ = c.SetReadDeadline(time.Now().Add(dnsTCPIdle))
				var hdr [2]byte
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				q := make([]byte, binary.BigEndian.Uint16(hdr[:]))
				if _, err := io.ReadFull(c, q); err != nil {
					return
				}
				out := n.answerWire(q, 65535)
				if out == nil {
					return
				}
				if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(out))), out...)); err != nil {
					return
				}
			}
		})
	}
}

// answerWire answers one wire-format query (nil: not a query).
func (n *Network) answerWire(q []byte, size int) []byte {
	var m dns.Msg
	if err := m.Unpack(q); err != nil || m.Response {
		return nil
	}
	r := n.answer(&m)
	if opt := m.IsEdns0(); opt != nil && int(opt.UDPSize()) > size {
		size = int(opt.UDPSize())
	}
	r.Truncate(size)
	out, err := r.Pack()
	if err != nil {
		return nil
	}
	return out
}

// answer applies the policy to a query: names not allowed get NXDOMAIN,
// Hosts and HostName are answered here, the rest goes upstream, and every
// A record of an answer makes its address reachable (for the names
// allowed) until its TTL ends.
func (n *Network) answer(q *dns.Msg) *dns.Msg {
	r := new(dns.Msg)
	r.SetReply(q)
	r.RecursionAvailable = true
	if len(q.Question) != 1 || q.Opcode != dns.OpcodeQuery {
		r.Rcode = dns.RcodeFormatError
		return r
	}
	qs := q.Question[0]
	name := strings.TrimSuffix(strings.ToLower(qs.Name), ".")
	if qs.Qclass != dns.ClassINET {
		r.Rcode = dns.RcodeRefused
		return r
	}
	local := func(a netip.Addr) *dns.Msg {
		if qs.Qtype == dns.TypeA || qs.Qtype == dns.TypeANY {
			r.Answer = append(r.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: qs.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: hostsTTL},
				A:   a.AsSlice(),
			})
		}
		return r
	}
	nx := func(reason string) *dns.Msg {
		if !strings.HasSuffix(name, ".arpa") {
			n.deny("dns", name, reason)
		}
		r.Rcode = dns.RcodeNameError
		return r
	}
	if name == HostName {
		if !n.pol.hostAllowed(0) {
			return nx("the host is not allowed")
		}
		return local(HostIP)
	}
	if !n.pol.nameAllowed(name, 0) {
		return nx("name not allowed")
	}
	if a, ok := n.hosts[name]; ok {
		n.pol.record(name, a, time.Now().Add(100*365*24*time.Hour), true)
		return local(a)
	}
	if qs.Qtype == dns.TypeAAAA {
		return r // the box has IPv4 only: no addresses, no error
	}
	up := n.exchange(q)
	if up == nil {
		r.Rcode = dns.RcodeServerFailure
		return r
	}
	up.Id = q.Id
	now := time.Now()
	kept := up.Answer[:0]
	for _, rr := range up.Answer {
		switch rec := rr.(type) {
		case *dns.A:
			if a, ok := netip.AddrFromSlice(rec.A.To4()); ok {
				ttl := min(time.Duration(rec.Hdr.Ttl)*time.Second, maxAnswerTTL)
				n.pol.record(name, a, now.Add(ttl+answerGrace), false)
			}
		case *dns.AAAA:
			continue
		}
		kept = append(kept, rr)
	}
	up.Answer = kept
	return up
}

// exchange asks the upstream resolvers in turn (TCP when UDP truncates).
func (n *Network) exchange(q *dns.Msg) *dns.Msg {
	ctx, cancel := context.WithTimeout(n.ctx, 2*upstreamTimeout)
	defer cancel()
	for _, srv := range n.upstream {
		for _, proto := range []string{"udp", "tcp"} {
			c := &dns.Client{Net: proto, Timeout: upstreamTimeout}
			m := q.Copy()
			m.Id = dns.Id()
			r, _, err := c.ExchangeContext(ctx, m, srv)
			if err != nil {
				break
			}
			if r.Truncated && proto == "udp" {
				continue
			}
			return r
		}
		if ctx.Err() != nil {
			return nil
		}
	}
	return nil
}
