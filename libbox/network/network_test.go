package network

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"

	"github.com/libbox/libbox/errdefs"
)

// hostAddr is a non-loopback IPv4 address of this machine: the test
// servers listen there, as the internet would be reached.
func hostAddr(t *testing.T) netip.Addr {
	t.Helper()
	for _, a := range HostAddrs() {
		if !a.IsLoopback() {
			return a
		}
	}
	t.Skip("no non-loopback IPv4 address on this machine: bring up an interface with an address")
	return netip.Addr{}
}

// echoServer echoes TCP on addr:0 until the test ends.
func echoServer(t *testing.T, ip netip.Addr) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return netip.MustParseAddrPort(l.Addr().String())
}

func udpEchoServer(t *testing.T, ip netip.Addr) netip.AddrPort {
	t.Helper()
	c, err := net.ListenPacket("udp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			k, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(buf[:k], from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return netip.MustParseAddrPort(c.LocalAddr().String())
}

// dnsServer answers A queries from names (TTL ttl) and NXDOMAIN otherwise.
func dnsServer(t *testing.T, names map[string]string, ttl uint32) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		name := strings.TrimSuffix(strings.ToLower(q.Question[0].Name), ".")
		ip, ok := names[name]
		switch {
		case !ok:
			r.Rcode = dns.RcodeNameError
		case q.Question[0].Qtype == dns.TypeA:
			r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: net.ParseIP(ip)})
		}
		w.WriteMsg(r)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan struct{})
	go func() { defer close(done); srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { srv.Shutdown(); <-done })
	return pc.LocalAddr().String()
}

// newTestNetwork builds a network with cfg, closed when the test ends.
func newTestNetwork(t *testing.T, cfg Config) *Network {
	t.Helper()
	if cfg.DNS == nil {
		cfg.DNS = []string{"127.0.0.1:1"} // no upstream: tests serve their own
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func isRefused(err error) bool {
	return err != nil && (errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(err.Error(), "connection was refused") || strings.Contains(err.Error(), "connection reset"))
}

// echoOnce sends msg over c and reads it back.
func echoOnce(c net.Conn, msg []byte) error {
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo mismatch")
	}
	return nil
}

func TestParseRuleErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "empty"},
		{"pypi.org:0", "port"},
		{"pypi.org:99999", "port"},
		{"pypi.org:http", "port"},
		{"10.0.0.0/33", "bad CIDR"},
		{"::1", "IPv4 only"},
		{"fd00::/8", "IPv4 only"},
		{"exa mple.com", "want a name"},
		{"-bad.com", "want a name"},
		{"a..b", "want a name"},
		{"*", ""},
		{"*.pythonhosted.org:443", ""},
		{"host:8080", ""},
		{"10.0.0.0/8:5432", ""},
	} {
		_, err := parseRule(tc.in)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%q: %v", tc.in, err)
			}
			continue
		}
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want InvalidArgument mentioning %q", tc.in, err, tc.want)
		}
	}
}

func TestPolicyTable(t *testing.T) {
	hostOwn := netip.MustParseAddr("203.0.113.9")
	now := time.Now()
	for _, tc := range []struct {
		name        string
		allow, deny []string
		answers     map[string]string // name -> ip recorded from upstream
		hosts       map[string]string // name -> ip recorded from Hosts
		dst         string
		want        verdict
	}{
		{"public internet", nil, nil, nil, nil, "8.8.4.4:22", allow},
		{"public: private range", nil, nil, nil, nil, "10.1.2.3:22", deny},
		{"public: CGNAT", nil, nil, nil, nil, "100.64.0.1:22", deny},
		{"public: metadata", nil, nil, nil, nil, "169.254.169.254:80", deny},
		{"public: multicast", nil, nil, nil, nil, "224.0.0.1:22", deny},
		{"public: loopback", nil, nil, nil, nil, "127.0.0.1:22", deny},
		{"public: host's own address", nil, nil, nil, nil, "203.0.113.9:22", deny},
		{"public: DNS elsewhere", nil, nil, nil, nil, "8.8.8.8:53", deny},
		{"public: DoT elsewhere", nil, nil, nil, nil, "8.8.8.8:853", deny},
		{"public: deny CIDR", nil, []string{"8.8.0.0/16"}, nil, nil, "8.8.4.4:22", deny},
		{"public: deny names makes 443 name-checked", nil, []string{"evil.com"}, nil, nil, "8.8.4.4:443", needName},
		{"allow IP", []string{"10.1.2.3"}, nil, nil, nil, "10.1.2.3:5432", allow},
		{"allow IP other IP", []string{"10.1.2.3"}, nil, nil, nil, "10.1.2.4:5432", deny},
		{"allow IP:port", []string{"10.1.2.3:5432"}, nil, nil, nil, "10.1.2.3:5433", deny},
		{"allow CIDR", []string{"10.0.0.0/8"}, nil, nil, nil, "10.9.9.9:1", allow},
		{"deny wins", []string{"10.0.0.0/8"}, []string{"10.9.0.0/16"}, nil, nil, "10.9.9.9:1", deny},
		{"metadata even with allow-list", []string{"pypi.org"}, nil, nil, nil, "169.254.169.254:80", deny},
		{"name not resolved", []string{"pypi.org"}, nil, nil, nil, "151.101.0.223:443", deny},
		{"name resolved 443", []string{"pypi.org"}, nil, map[string]string{"pypi.org": "151.101.0.223"}, nil, "151.101.0.223:443", needName},
		{"name resolved 22", []string{"pypi.org"}, nil, map[string]string{"pypi.org": "151.101.0.223"}, nil, "151.101.0.223:22", allow},
		{"name:port other port", []string{"pypi.org:443"}, nil, map[string]string{"pypi.org": "151.101.0.223"}, nil, "151.101.0.223:22", deny},
		{"wildcard", []string{"*.pythonhosted.org"}, nil, map[string]string{"files.pythonhosted.org": "151.101.1.1"}, nil, "151.101.1.1:22", allow},
		{"wildcard not apex", []string{"*.pythonhosted.org"}, nil, map[string]string{"pythonhosted.org": "151.101.1.1"}, nil, "151.101.1.1:22", deny},
		{"answer of a name not allowed", []string{"pypi.org"}, nil, map[string]string{"evil.com": "151.101.1.1"}, nil, "151.101.1.1:22", deny},
		{"rebinding to private", []string{"pypi.org"}, nil, map[string]string{"pypi.org": "10.0.0.1"}, nil, "10.0.0.1:22", deny},
		{"rebinding to metadata", []string{"pypi.org"}, nil, map[string]string{"pypi.org": "169.254.169.254"}, nil, "169.254.169.254:80", deny},
		{"Hosts may name private", []string{"db.internal"}, nil, nil, map[string]string{"db.internal": "10.1.2.3"}, "10.1.2.3:5432", allow},
		{"Hosts name not allowed", []string{"pypi.org"}, nil, nil, map[string]string{"db.internal": "10.1.2.3"}, "10.1.2.3:5432", deny},
		{"star is public only", []string{"*"}, nil, nil, nil, "10.1.2.3:22", deny},
		{"star public", []string{"*"}, nil, nil, nil, "1.1.1.1:22", allow},
		{"explicit DNS server", []string{"10.0.0.53:53"}, nil, nil, nil, "10.0.0.53:53", allow},
		{"DNS needs explicit port", []string{"10.0.0.53"}, nil, nil, nil, "10.0.0.53:53", deny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := newPolicy(tc.allow, tc.deny, func() []netip.Addr { return []netip.Addr{hostOwn} })
			if err != nil {
				t.Fatal(err)
			}
			for n, ip := range tc.answers {
				p.record(n, netip.MustParseAddr(ip), now.Add(time.Minute), false)
			}
			for n, ip := range tc.hosts {
				p.record(n, netip.MustParseAddr(ip), now.Add(time.Minute), true)
			}
			got, why := p.checkAddr(netip.MustParseAddrPort(tc.dst), now)
			if got != tc.want {
				t.Fatalf("%s: got %v (%s), want %v", tc.dst, got, why, tc.want)
			}
			if got == deny && why == "" {
				t.Fatal("denied without a reason")
			}
		})
	}
}

func TestPolicyNames(t *testing.T) {
	p, err := newPolicy([]string{"pypi.org", "*.pythonhosted.org:443", "host:8080"}, []string{"bad.pythonhosted.org"}, HostAddrs)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		port uint16
		want bool
	}{
		{"pypi.org", 0, true}, {"PyPI.org.", 443, true}, {"www.pypi.org", 0, false},
		{"files.pythonhosted.org", 443, true}, {"files.pythonhosted.org", 80, false}, {"files.pythonhosted.org", 0, true},
		{"bad.pythonhosted.org", 0, false}, {"evil.com", 0, false}, {HostName, 0, true},
	} {
		if got := p.nameAllowed(tc.name, tc.port); got != tc.want {
			t.Errorf("nameAllowed(%q, %d) = %v, want %v", tc.name, tc.port, got, tc.want)
		}
	}
	if !p.hostAllowed(8080) || p.hostAllowed(22) {
		t.Error("host:8080 must allow the host's port 8080 only")
	}
	// Answers expire.
	a := netip.MustParseAddr("151.101.0.223")
	p.record("pypi.org", a, time.Now().Add(time.Second), false)
	if v, _ := p.checkAddr(netip.AddrPortFrom(a, 22), time.Now()); v != allow {
		t.Fatal("recent answer not reachable")
	}
	p.expire(time.Now().Add(time.Minute))
	if v, _ := p.checkAddr(netip.AddrPortFrom(a, 22), time.Now()); v != deny {
		t.Fatal("expired answer still reachable")
	}
}

func TestSniff(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"GET / HTTP/1.1\r\nHost: Example.COM:8080\r\nAccept: */*\r\n\r\n", "example.com", true},
		{"GET / HTTP/1.1\r\nhost:example.com\r\n\r\n", "example.com", true},
		{"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", "", false},
		{"SSH-2.0-OpenSSH\r\n\r\n", "", false},
	} {
		name, done, err := parseName([]byte(tc.in))
		if !done || name != tc.want || (err == nil) != tc.ok {
			t.Errorf("%q: got %q %v %v", tc.in, name, done, err)
		}
	}
	if _, done, _ := parseName([]byte("GET / HTTP/1.1\r\nHost: exa")); done {
		t.Error("partial request: want more bytes")
	}
	// A real ClientHello.
	for _, sni := range []string{"pypi.org", "files.pythonhosted.org"} {
		a, b := net.Pipe()
		go func() {
			c := tls.Client(a, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
			c.Handshake()
			a.Close()
		}()
		name, head, err := sniffName(b, 443)
		b.Close()
		if err != nil || name != sni || len(head) == 0 {
			t.Errorf("SNI %q: got %q, %v", sni, name, err)
		}
	}
	if _, _, err := parseSNI([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 9}); err == nil {
		t.Error("truncated ClientHello: want an error")
	}
}

func TestBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Allow: []string{"bad name"}}, "network rule"},
		{Config{Hosts: map[string]string{"db": "not-an-ip"}}, "IPv4"},
		{Config{DNS: []string{"resolver.example"}}, "DNS server"},
		{Config{Ports: []PortMapping{{Host: "127.0.0.1:0", Box: 0}}}, "box port"},
		{Config{Ports: []PortMapping{{Host: "x:y", Box: 80}}}, "IP:PORT"},
		{Config{Ports: []PortMapping{{Box: 80, Protocol: "sctp"}}}, "protocol"},
		{Config{MTU: 100}, "MTU"},
	} {
		n, err := New(tc.cfg)
		if err == nil {
			n.Close()
		}
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want InvalidArgument mentioning %q", tc.cfg, err, tc.want)
		}
	}
}

func TestForwardAllowed(t *testing.T) {
	ip := hostAddr(t)
	payload := bytes.Repeat([]byte("0123456789abcdef"), 10<<20/16)
	sum := sha256.Sum256(payload)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(payload) }))
	l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = l
	srv.Start()
	defer srv.Close()
	echo := echoServer(t, ip)
	n := newTestNetwork(t, Config{Allow: []string{ip.String()}})
	box := newTestBox(t, n, BoxIP)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// HTTP GET of 10 MB, intact (the server's port is not name-checked).
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
		return box.dialTCP(ctx, addr)
	}}}
	resp, err := client.Get("http://" + l.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || sha256.Sum256(got) != sum {
		t.Fatalf("GET: %d bytes, err %v: not the 10 MB sent", len(got), err)
	}
	client.CloseIdleConnections()

	// 64 concurrent connections.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := box.dialTCP(ctx, echo.String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			errs <- echoOnce(c, []byte(fmt.Sprintf("conn %d %s", i, strings.Repeat("x", 1000))))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// UDP.
	uecho := udpEchoServer(t, ip)
	uc, err := box.dialUDP(uecho.String())
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := echoOnce(uc, []byte("datagram")); err != nil {
		t.Fatal(err)
	}
	if d := n.Info().Denied; d != 0 {
		t.Fatalf("denied %d: %+v", d, n.Info().Recent)
	}
}

func TestDenied(t *testing.T) {
	ip := hostAddr(t)
	echo := echoServer(t, ip)
	other := echoServer(t, ip)
	loop := echoServer(t, netip.MustParseAddr("127.0.0.1"))
	uecho := udpEchoServer(t, ip)
	n := newTestNetwork(t, Config{Allow: []string{echo.String()}})
	box := newTestBox(t, n, BoxIP)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := box.dialTCP(ctx, echo.String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	for _, dst := range []string{
		other.String(),       // same IP, port not listed
		"169.254.169.254:80", // cloud metadata
		netip.AddrPortFrom(HostIP, loop.Port()).String(), // the host's loopback without "host"
		netip.AddrPortFrom(GatewayIP, 22).String(),       // the gateway
		"192.168.127.3:22",                               // another address of the subnet
		netip.AddrPortFrom(ip, 53).String(),              // DNS elsewhere (TCP)
		netip.AddrPortFrom(ip, 853).String(),             // DNS over TLS
	} {
		start := time.Now()
		c, err := box.dialTCP(ctx, dst)
		if err == nil {
			c.Close()
			t.Fatalf("%s: connected, want a reset", dst)
		}
		if !isRefused(err) {
			t.Fatalf("%s: %v, want a reset (connection refused)", dst, err)
		}
		t.Logf("%s refused after %v", dst, time.Since(start))
	}
	// UDP to a port not listed: dropped, counted.
	before := n.Info().Denied
	uc, err := box.dialUDP(uecho.String())
	if err != nil {
		t.Fatal(err)
	}
	uc.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if err := echoOnce(uc, []byte("x")); err == nil {
		t.Fatal("UDP to a port not allowed got an answer")
	}
	uc.Close()
	info := n.Info()
	if info.Denied != before+1 || len(info.Recent) == 0 || info.Recent[len(info.Recent)-1].Protocol != "udp" {
		t.Fatalf("denials: %+v", info)
	}
}

func TestSpoofedSource(t *testing.T) {
	ip := hostAddr(t)
	echo := echoServer(t, ip)
	n := newTestNetwork(t, Config{Allow: []string{ip.String()}})
	box := newTestBox(t, n, netip.MustParseAddr("192.168.127.3"))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if c, err := box.dialTCP(ctx, echo.String()); err == nil {
		c.Close()
		t.Fatal("a spoofed source connected")
	}
	info := n.Info()
	if info.Denied == 0 || !strings.Contains(info.Recent[0].Reason, "spoofed") {
		t.Fatalf("want a spoofed-source denial, got %+v", info)
	}
}

func TestDNSPolicy(t *testing.T) {
	ip := hostAddr(t)
	echo := echoServer(t, ip)
	up := dnsServer(t, map[string]string{"api.test": ip.String(), "other.test": ip.String(), "rebind.test": "10.0.0.1"}, 5)
	n := newTestNetwork(t, Config{
		Allow: []string{"api.test", "rebind.test", "db.internal", "host"},
		Deny:  []string{"blocked.test"},
		Hosts: map[string]string{"db.internal": ip.String(), "blocked.test": ip.String()},
		DNS:   []string{up},
	})
	// The test address may be private: let upstream answers reach it (the
	// rebinding row of TestPolicyTable covers the real ranges).
	n.pol.special = func(a netip.Addr) bool { return a != ip && isSpecial(a) }
	n.pol.hostAddrs = func() []netip.Addr { return nil }
	box := newTestBox(t, n, BoxIP)
	res := box.resolver()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Before any lookup the address is not reachable.
	if c, err := box.dialTCP(ctx, echo.String()); err == nil {
		c.Close()
		t.Fatal("reached an address no allowed name answered")
	}
	addrs, err := res.LookupHost(ctx, "api.test")
	if err != nil || len(addrs) != 1 || addrs[0] != ip.String() {
		t.Fatalf("api.test: %v %v", addrs, err)
	}
	c, err := box.dialTCP(ctx, echo.String())
	if err != nil {
		t.Fatalf("allowed name's answer: %v", err)
	}
	if err := echoOnce(c, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// Once the answer expired, the address is gone again.
	n.pol.expire(time.Now().Add(time.Hour))
	if c, err := box.dialTCP(ctx, echo.String()); err == nil {
		c.Close()
		t.Fatal("reached an address after its answer expired")
	}
	for _, name := range []string{"other.test", "blocked.test", "nothing.test"} {
		_, err := res.LookupHost(ctx, name)
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound {
			t.Fatalf("%s: %v, want NXDOMAIN", name, err)
		}
	}
	if a, err := res.LookupHost(ctx, "db.internal"); err != nil || a[0] != ip.String() {
		t.Fatalf("Hosts entry: %v %v", a, err)
	}
	if a, err := res.LookupHost(ctx, HostName); err != nil || a[0] != HostIP.String() {
		t.Fatalf("%s: %v %v", HostName, a, err)
	}
	// DNS over TCP too.
	tres := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return box.dialTCP(ctx, GatewayIP.String()+":53")
	}}
	if a, err := tres.LookupHost(ctx, "db.internal"); err != nil || a[0] != ip.String() {
		t.Fatalf("DNS over TCP: %v %v", a, err)
	}
	info := n.Info()
	if info.Denied < 3 {
		t.Fatalf("want the refused names counted: %+v", info)
	}
}

func TestNameCheckedPorts(t *testing.T) {
	ip := hostAddr(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello "+r.Host) }))
	l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = l
	srv.StartTLS()
	defer srv.Close()
	plain := httptest.NewUnstartedServer(srv.Config.Handler)
	pl, _ := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	plain.Listener = pl
	plain.Start()
	defer plain.Close()
	tlsPort := netip.MustParseAddrPort(l.Addr().String()).Port()
	httpPort := netip.MustParseAddrPort(pl.Addr().String()).Port()

	n := newTestNetwork(t, Config{
		Allow: []string{"api.test", "evil.test"},
		Deny:  []string{"evil.test"},
		Hosts: map[string]string{"api.test": ip.String()},
	})
	n.pol.namePorts = map[uint16]bool{tlsPort: true, httpPort: true}
	box := newTestBox(t, n, BoxIP)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := box.resolver().LookupHost(ctx, "api.test"); err != nil {
		t.Fatal(err)
	}
	get := func(scheme string, port uint16, host string) (string, error) {
		tr := &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return box.dialTCP(ctx, netip.AddrPortFrom(ip, port).String())
			},
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: host},
		}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get(scheme + "://" + host + ":" + strconv.Itoa(int(port)) + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	if got, err := get("https", tlsPort, "api.test"); err != nil || !strings.HasPrefix(got, "hello api.test") {
		t.Fatalf("SNI api.test: %q %v", got, err)
	}
	if got, err := get("http", httpPort, "api.test"); err != nil || !strings.HasPrefix(got, "hello api.test") {
		t.Fatalf("Host api.test: %q %v", got, err)
	}
	for _, tc := range []struct {
		scheme string
		port   uint16
		host   string
	}{{"https", tlsPort, "evil.test"}, {"http", httpPort, "evil.test"}, {"https", tlsPort, "unlisted.test"}, {"http", httpPort, "unlisted.test"}} {
		before := n.Info().Denied
		if got, err := get(tc.scheme, tc.port, tc.host); err == nil {
			t.Fatalf("%s %s on an allowed IP: got %q, want a reset", tc.scheme, tc.host, got)
		} else if !strings.Contains(err.Error(), "reset") && !strings.Contains(err.Error(), "EOF") {
			t.Fatalf("%s %s: %v, want a reset", tc.scheme, tc.host, err)
		}
		if n.Info().Denied != before+1 {
			t.Fatalf("%s %s: denial not counted", tc.scheme, tc.host)
		}
	}
}

func TestHostLoopback(t *testing.T) {
	loop := echoServer(t, netip.MustParseAddr("127.0.0.1"))
	n := newTestNetwork(t, Config{Allow: []string{"host:" + strconv.Itoa(int(loop.Port()))}})
	box := newTestBox(t, n, BoxIP)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a, err := box.resolver().LookupHost(ctx, HostName)
	if err != nil || a[0] != HostIP.String() {
		t.Fatalf("%s: %v %v", HostName, a, err)
	}
	c, err := box.dialTCP(ctx, netip.AddrPortFrom(HostIP, loop.Port()).String())
	if err != nil {
		t.Fatal(err)
	}
	if err := echoOnce(c, []byte("to the host")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if c, err := box.dialTCP(ctx, netip.AddrPortFrom(HostIP, loop.Port()+1).String()); !isRefused(err) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("host on a port not listed: %v", err)
	}
}

func TestPublish(t *testing.T) {
	n := newTestNetwork(t, Config{Ports: []PortMapping{{Host: "127.0.0.1:0", Box: 80}}})
	box := newTestBox(t, n, BoxIP)
	l := box.listenTCP(80)
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	uc := box.listenUDP(53)
	defer uc.Close()
	go func() {
		buf := make([]byte, 65536)
		for {
			k, from, err := uc.ReadFrom(buf)
			if err != nil {
				return
			}
			uc.WriteTo(buf[:k], from)
		}
	}()
	info := n.Info()
	if len(info.Ports) != 1 || strings.HasSuffix(info.Ports[0].Host, ":0") {
		t.Fatalf("ports: %+v", info.Ports)
	}
	addr := info.Ports[0].Host
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("published port "), 10<<20/15)
	go c.Write(payload)
	got := make([]byte, len(payload))
	c.SetDeadline(time.Now().Add(3 * time.Minute))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("10 MB through a published port: %v", err)
	}
	c.Close()

	um, err := n.Publish(PortMapping{Host: "0", Box: 53, Protocol: "udp"})
	if err != nil {
		t.Fatal(err)
	}
	u, err := net.Dial("udp", um.Host)
	if err != nil {
		t.Fatal(err)
	}
	u.SetDeadline(time.Now().Add(10 * time.Second))
	if err := echoOnce(u, []byte("udp through a published port")); err != nil {
		t.Fatal(err)
	}
	u.Close()
	if _, err := n.Publish(PortMapping{Host: addr, Box: 81}); !errdefs.IsAlreadyExists(err) && !errdefs.IsUnavailable(err) {
		t.Fatalf("publishing a bound port twice: %v", err)
	}
	if err := n.Unpublish(PortMapping{Host: addr}); err != nil {
		t.Fatal(err)
	}
	if err := n.Unpublish(PortMapping{Host: addr}); !errdefs.IsNotFound(err) {
		t.Fatalf("second unpublish: %v", err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("unpublished port still listens")
	}
	n.Close()
	if c, err := net.Dial("udp", um.Host); err == nil {
		// A freed UDP port can be bound again.
		c.Close()
		pc, err := net.ListenPacket("udp", um.Host)
		if err != nil {
			t.Fatalf("UDP port not freed at close: %v", err)
		}
		pc.Close()
	}
}

func TestCloseLeaksNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ip := hostAddr(t)
	for i := 0; i < 20; i++ {
		func() {
			echo := echoServerNoCleanup(ip)
			defer echo.Close()
			n, err := New(Config{Allow: []string{ip.String()}, DNS: []string{"127.0.0.1:1"}, Ports: []PortMapping{{Box: 80}}})
			if err != nil {
				t.Fatal(err)
			}
			box := newTestBox(t, n, BoxIP)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := box.dialTCP(ctx, echo.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			// Closing with the connection still open.
			if err := echoOnce(c, []byte("x")); err != nil {
				t.Fatal(err)
			}
			n.Close()
			n.Close()
			c.Close()
			box.Close()
		}()
	}
}

// echoServerNoCleanup is an echo listener the caller closes (its
// goroutines end with the connections the network closes).
func echoServerNoCleanup(ip netip.Addr) net.Listener {
	l, _ := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return l
}
