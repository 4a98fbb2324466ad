package libbox_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/libbox/libbox/internal/testutil"
	"github.com/libbox/libbox/libbox"
	"github.com/libbox/libbox/libbox/network"
)

// netHost is what the network tests serve from the host, on a
// non-loopback address (CI has no internet): HTTP (10 MB), TCP and UDP
// echo, an upstream DNS server, and a TCP echo on the host's loopback.
type netHost struct {
	ip                      netip.Addr
	http, echo, other, loop netip.AddrPort
	loop2                   netip.AddrPort
	udp                     netip.AddrPort
	dns                     string
	payload                 []byte
	udpSeen                 atomic.Int64 // datagrams the UDP echo got
	dns53                   bool         // a DNS server answers on ip:53
}

func startNetHost(t *testing.T) *netHost {
	t.Helper()
	h := &netHost{}
	for _, a := range network.HostAddrs() {
		if !a.IsLoopback() {
			h.ip = a
			break
		}
	}
	if !h.ip.IsValid() {
		testutil.SkipOrFail(t, "no non-loopback IPv4 address on this machine to serve the network tests from (fix: bring up an interface with an address)")
	}
	listen := func(ip netip.Addr) net.Listener {
		l, err := net.Listen("tcp4", net.JoinHostPort(ip.String(), "0"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	echo := func(l net.Listener) netip.AddrPort {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { io.Copy(c, c); c.Close() }()
			}
		}()
		return netip.MustParseAddrPort(l.Addr().String())
	}
	h.payload = bytes.Repeat([]byte("libbox network "), 10<<20/15)
	hl := listen(h.ip)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(h.payload) })}
	go srv.Serve(hl)
	t.Cleanup(func() { srv.Close() })
	h.http = netip.MustParseAddrPort(hl.Addr().String())
	h.echo, h.other = echo(listen(h.ip)), echo(listen(h.ip))
	lo := netip.MustParseAddr("127.0.0.1")
	h.loop, h.loop2 = echo(listen(lo)), echo(listen(lo))
	uc, err := net.ListenPacket("udp4", net.JoinHostPort(h.ip.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			k, from, err := uc.ReadFrom(buf)
			if err != nil {
				return
			}
			h.udpSeen.Add(1)
			uc.WriteTo(buf[:k], from)
		}
	}()
	h.udp = netip.MustParseAddrPort(uc.LocalAddr().String())
	answer := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		name := strings.TrimSuffix(q.Question[0].Name, ".")
		if (name == "api.test" || name == "other.test") && q.Question[0].Qtype == dns.TypeA {
			r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: h.ip.AsSlice()})
		} else if name != "api.test" && name != "other.test" {
			r.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(r)
	})
	serve := func(addr string) (string, bool) {
		pc, err := net.ListenPacket("udp4", addr)
		if err != nil {
			return "", false
		}
		s := &dns.Server{PacketConn: pc, Handler: answer}
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go s.ActivateAndServe()
		<-started
		t.Cleanup(func() { s.Shutdown() })
		return pc.LocalAddr().String(), true
	}
	h.dns, _ = serve("127.0.0.1:0")
	_, h.dns53 = serve(net.JoinHostPort(h.ip.String(), "53"))
	return h
}

// netpeer builds the tests' static network tool into a directory the
// boxes mount at /opt/t.
func netpeer(t *testing.T) libbox.Volume {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "netpeer"), "./testdata/netpeer")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build netpeer: %v\n%s", err, out)
	}
	return libbox.Volume{HostPath: dir, BoxPath: "/opt/t", ReadOnly: true}
}

// netRun runs a script under a deadline long enough for a loaded machine.
func netRun(t *testing.T, b *libbox.Box, script string) libbox.Result {
	t.Helper()
	r, err := b.Run(ctxT(t, 3*time.Minute), libbox.Command{Args: []string{"sh", "-c", script}})
	if err != nil {
		t.Fatalf("%q: %v", script, err)
	}
	return r
}

// netSh runs a script that must succeed, returning its output.
func netSh(t *testing.T, b *libbox.Box, script string) string {
	t.Helper()
	r := netRun(t, b, script)
	if r.ExitCode != 0 {
		t.Fatalf("sh -c %q: exit %d, stderr %q", script, r.ExitCode, r.Stderr)
	}
	return string(r.Stdout)
}

// shFail runs a script that must fail, returning its output.
func shFail(t *testing.T, b *libbox.Box, script string) string {
	t.Helper()
	r := netRun(t, b, script)
	if r.ExitCode == 0 {
		t.Fatalf("sh -c %q succeeded (%q), want a failure", script, r.Stdout)
	}
	return string(r.Stdout) + string(r.Stderr)
}

func TestNetworkOff(t *testing.T) {
	h := startNetHost(t)
	rt := openRT(t, "")
	b := startBox(t, rt, libbox.BoxOptions{AutoRemove: true})
	links := netSh(t, b, "ip -o link | awk -F': ' '{print $2}'")
	if strings.TrimSpace(links) != "lo" {
		t.Fatalf("network off: links %q, want lo only", links)
	}
	out := shFail(t, b, "nc -w 3 "+h.ip.String()+" "+strconv.Itoa(int(h.echo.Port()))+" </dev/null")
	if !strings.Contains(out, "unreachable") {
		t.Fatalf("connect with the network off: %q, want network unreachable", out)
	}
	if b.Info().Network != nil {
		t.Fatal("network info for a box without network")
	}
}

func TestSandboxNetwork(t *testing.T) { testBoxNetwork(t, libbox.IsolationSandbox) }

// testBoxNetwork runs the network rows in one box of the isolation.
func testBoxNetwork(t *testing.T, isolation string) {
	h := startNetHost(t)
	vol := netpeer(t)
	rt := openRT(t, "")
	port := func(ap netip.AddrPort) string { return strconv.Itoa(int(ap.Port())) }
	b := startBox(t, rt, libbox.BoxOptions{Isolation: isolation, AutoRemove: true, Volumes: []libbox.Volume{vol}, Network: libbox.Network{
		Enabled: true,
		Allow: []string{h.http.String(), h.echo.String(), h.udp.String(), "api.test", "db.internal:" + port(h.other),
			"host:" + port(h.loop)},
		Deny:  []string{"blocked.test"},
		Hosts: map[string]string{"db.internal": h.ip.String(), "blocked.test": h.ip.String()},
		DNS:   []string{h.dns},
		Ports: []libbox.PortMapping{{Host: "127.0.0.1:0", Box: 8080}},
	}})
	ip := h.ip.String()
	var udpPublished string

	t.Run("interface", func(t *testing.T) {
		out := netSh(t, b, "ip -4 -o addr show eth0; ip route; cat /etc/resolv.conf")
		for _, want := range []string{"192.168.127.2/24", "default via 192.168.127.1", "nameserver 192.168.127.1"} {
			if !strings.Contains(out, want) {
				t.Fatalf("missing %q in %q", want, out)
			}
		}
	})
	t.Run("dns", func(t *testing.T) {
		if out := netSh(t, b, "nslookup api.test"); !strings.Contains(out, ip) {
			t.Fatalf("api.test: %q", out)
		}
		if out := netSh(t, b, "nslookup db.internal"); !strings.Contains(out, ip) {
			t.Fatalf("Hosts entry: %q", out)
		}
		for _, name := range []string{"other.test", "blocked.test", "nowhere.test"} {
			if out := shFail(t, b, "nslookup "+name); !strings.Contains(out, "NXDOMAIN") {
				t.Fatalf("%s: %q, want NXDOMAIN", name, out)
			}
		}
	})
	t.Run("http 10MB", func(t *testing.T) {
		sum := sha256.Sum256(h.payload)
		out := netSh(t, b, "wget -q -O - http://"+h.http.String()+"/ | sha256sum")
		if !strings.HasPrefix(out, hex.EncodeToString(sum[:])) {
			t.Fatalf("10 MB GET: %q", out)
		}
	})
	t.Run("64 connections", func(t *testing.T) {
		out := netSh(t, b, "for i in $(seq 64); do /opt/t/netpeer tcp "+h.echo.String()+" & done 2>&1; wait")
		if n := strings.Count(out, "connected"); n != 64 {
			t.Fatalf("%d of 64 connected: %q", n, out)
		}
		if out := netSh(t, b, "/opt/t/netpeer udp "+h.udp.String()+" ping-udp"); !strings.Contains(out, "ping-udp") {
			t.Fatalf("UDP echo: %q", out)
		}
	})
	t.Run("allowed name", func(t *testing.T) {
		// db.internal (Hosts) resolves to the host address; its echo port is
		// allowed by address anyway, the other port only by name.
		if out := netSh(t, b, "/opt/t/netpeer tcp db.internal:"+port(h.other)); !strings.Contains(out, "connected") {
			t.Fatalf("allowed name: %q", out)
		}
	})
	bypass := []struct{ name, script, want string }{
		{"IP literal not allowed", "/opt/t/netpeer tcp " + netip.AddrPortFrom(netip.MustParseAddr("203.0.113.7"), 80).String(), "refused"},
		{"allowed IP, port not listed", "nc -w 5 " + ip + " 1 </dev/null", "refused"},
		{"cloud metadata", "/opt/t/netpeer tcp 169.254.169.254:80", "refused"},
		{"host loopback port not allowed", "/opt/t/netpeer tcp " + network.HostIP.String() + ":" + port(h.loop2), "refused"},
		{"another box's address", "/opt/t/netpeer tcp 192.168.127.3:8080", "no route to host"},
		{"gateway other port", "/opt/t/netpeer tcp 192.168.127.1:22", "refused"},
		{"DNS over TCP elsewhere", "/opt/t/netpeer tcp " + ip + ":53", "refused"},
		{"DNS over TLS elsewhere", "/opt/t/netpeer tcp " + ip + ":853", "refused"},
		{"UDP port not allowed", "/opt/t/netpeer udp " + ip + ":1 x", "timeout"},
		{"ICMP", "ping -c 1 -W 2 " + ip, "0 packets received"},
		{"IPv6", "/opt/t/netpeer tcp [2001:db8::1]:80", ""},
		{"on-link route around the gateway", "ip route add " + ip + "/32 dev eth0 && /opt/t/netpeer tcp " + netip.AddrPortFrom(h.ip, h.other.Port()).String() + "; r=$?; ip route del " + ip + "/32 dev eth0; exit $r", ""},
	}
	if h.dns53 {
		bypass = append(bypass, struct{ name, script, want string }{"DNS over UDP elsewhere", "nslookup other.test " + ip, ""})
	} else {
		t.Logf("DNS-elsewhere UDP row not run: cannot bind %s:53 on this machine", ip)
	}
	for _, c := range bypass {
		t.Run("bypass/"+c.name, func(t *testing.T) {
			before := b.Info().Network.Denied
			out := shFail(t, b, c.script)
			if c.want != "" && !strings.Contains(strings.ToLower(out), c.want) {
				t.Fatalf("%q, want %q", out, c.want)
			}
			if !strings.HasPrefix(c.want, "no route") && c.name != "IPv6" && c.name != "on-link route around the gateway" && b.Info().Network.Denied == before {
				t.Fatalf("denial not counted (%q)", out)
			}
		})
	}
	t.Run("bypass/change address (spoofed source)", func(t *testing.T) {
		before := h.udpSeen.Load()
		netSh(t, b, "/opt/t/netpeer spoof 192.168.127.9 "+h.udp.String()+" forged; sleep 0.5")
		out := shFail(t, b, "ip addr flush dev eth0 && ip addr add 192.168.127.3/24 dev eth0 && ip route add default via 192.168.127.1 && /opt/t/netpeer udp "+h.udp.String()+" x; r=$?; "+
			"ip addr flush dev eth0; ip addr add 192.168.127.2/24 dev eth0; ip route add default via 192.168.127.1; exit $r")
		if got := h.udpSeen.Load(); got != before {
			t.Fatalf("the host got %d datagrams from forged sources (%q)", got-before, out)
		}
		info := b.Info().Network
		if !strings.Contains(info.Recent[len(info.Recent)-1].Reason, "spoofed") {
			t.Fatalf("last denial: %+v", info.Recent[len(info.Recent)-1])
		}
		// The box works again with its own address.
		if out := netSh(t, b, "/opt/t/netpeer udp "+h.udp.String()+" back"); !strings.Contains(out, "back") {
			t.Fatalf("after restoring the address: %q", out)
		}
	})
	t.Run("host loopback allowed", func(t *testing.T) {
		if out := netSh(t, b, "/opt/t/netpeer tcp "+network.HostName+":"+port(h.loop)); !strings.Contains(out, "connected") {
			t.Fatalf("%q", out)
		}
	})
	t.Run("published ports", func(t *testing.T) {
		p, err := b.Exec(ctxT(t, 5*time.Minute), libbox.Command{Args: []string{"/opt/t/netpeer", "tcp-echo", "8080"}})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Cancel()
		pu, err := b.Exec(ctxT(t, 5*time.Minute), libbox.Command{Args: []string{"/opt/t/netpeer", "udp-echo", "5353"}})
		if err != nil {
			t.Fatal(err)
		}
		defer pu.Cancel()
		info := b.Info().Network
		if len(info.Ports) != 1 || strings.HasSuffix(info.Ports[0].Host, ":0") {
			t.Fatalf("ports: %+v", info.Ports)
		}
		addr := info.Ports[0].Host
		var c net.Conn
		for i := 0; i < 100; i++ { // until the echo server listens
			if c, err = net.Dial("tcp", addr); err == nil {
				c.SetDeadline(time.Now().Add(2 * time.Second))
				if _, err = c.Write([]byte("x")); err == nil {
					if _, err = io.ReadFull(c, make([]byte, 1)); err == nil {
						break
					}
				}
				c.Close()
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		go c.Write(h.payload)
		got := make([]byte, len(h.payload))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, h.payload) {
			t.Fatalf("10 MB through the published port: %v", err)
		}
		c.Close()
		um, err := b.Publish(libbox.PortMapping{Host: "0", Box: 5353, Protocol: "udp"})
		if err != nil {
			t.Fatal(err)
		}
		uc, err := net.Dial("udp", um.Host)
		if err != nil {
			t.Fatal(err)
		}
		defer uc.Close()
		ok := false
		for i := 0; i < 50 && !ok; i++ {
			uc.SetDeadline(time.Now().Add(200 * time.Millisecond))
			uc.Write([]byte("udp-published"))
			buf := make([]byte, 100)
			k, err := uc.Read(buf)
			ok = err == nil && string(buf[:k]) == "udp-published"
		}
		if !ok {
			t.Fatal("no UDP echo through the published port")
		}
		if err := b.Unpublish(libbox.PortMapping{Host: addr}); err != nil {
			t.Fatal(err)
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			t.Fatal("unpublished port still accepts")
		}
		if err := b.Unpublish(libbox.PortMapping{Host: addr}); !errors.Is(err, libbox.ErrNotFound) {
			t.Fatalf("unpublish twice: %v", err)
		}
		udpPublished = um.Host
	})
	t.Run("info", func(t *testing.T) {
		info := b.Info().Network
		if info == nil || info.Address != "192.168.127.2/24" || info.Denied == 0 || len(info.Recent) == 0 || info.RxBytes == 0 {
			t.Fatalf("info: %+v", info)
		}
	})
	t.Run("stop frees", func(t *testing.T) {
		if err := b.Stop(ctxT(t, 30*time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Publish(libbox.PortMapping{Box: 80}); !errors.Is(err, libbox.ErrFailedPrecondition) {
			t.Fatalf("publish on a stopped box: %v", err)
		}
		if udpPublished != "" {
			l, err := net.ListenPacket("udp", udpPublished)
			if err != nil {
				t.Fatalf("UDP port %s still bound after stop: %v", udpPublished, err)
			}
			l.Close()
		}
	})
}

// TestNetworkNoLeaks: create/start/remove cycles with the network on.
func TestNetworkNoLeaks(t *testing.T) {
	requireSandbox(t)
	home := t.TempDir()
	cycles := 100
	if testing.Short() {
		cycles = 10
	}
	func() {
		rt := openRT(t, home)
		b := startBox(t, rt, libbox.BoxOptions{AutoRemove: true, Network: libbox.Network{Enabled: true}})
		run(t, b, "true")
		rt.Close()
	}()
	fds, gor := testutil.FDs(), runtime.NumGoroutine()
	rt, err := libbox.Open(libbox.Options{Home: home})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 10*time.Minute)
	for i := 0; i < cycles; i++ {
		// Every other box is detached: its network runs in a helper process.
		b, err := rt.Create(ctx, libbox.BoxOptions{Isolation: "sandbox", Detach: i%2 == 1, Network: libbox.Network{Enabled: true, Ports: []libbox.PortMapping{{Box: 80}}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if r, err := b.Run(ctx, libbox.Command{Args: []string{"ip", "-4", "-o", "addr", "show", "eth0"}}); err != nil || !strings.Contains(string(r.Stdout), "192.168.127.2") {
			t.Fatalf("cycle %d: %v %q", i, err, r.Stdout)
		}
		if err := rt.Remove(ctx, b.ID(), true); err != nil {
			t.Fatal(err)
		}
	}
	rt.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		gotF, gotG, helpers := testutil.FDs(), runtime.NumGoroutine(), netHelpers(home)
		if gotF <= fds && gotG <= gor+2 && len(helpers) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leaks after %d cycles with network: fds %d→%d, goroutines %d→%d, network helpers left %v", cycles, fds, gotF, gor, gotG, helpers)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// netHelpers lists the pids of network helpers (box-netd) serving boxes
// under dir.
func netHelpers(dir string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if args := strings.Split(string(cmd), "\x00"); len(args) >= 3 && args[1] == "--serve" && strings.HasPrefix(args[2], dir+"/") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestDetachedNetwork: a detached box keeps its network and published
// ports after the process that started it exits; the next process follows
// it (info, publish) and stopping it ends its network helper.
func TestDetachedNetwork(t *testing.T) {
	requireSandbox(t)
	testDetachedNetwork(t, libbox.IsolationSandbox)
}

// testDetachedNetwork runs TestDetachedNetwork's steps with a box of the
// isolation; the starting process is the test binary running t's test.
func testDetachedNetwork(t *testing.T, isolation string) {
	if home := os.Getenv("LIBBOX_TEST_DETACHED_NET_HOME"); home != "" {
		// The starting process: start the box, serve an echo in it, exit.
		rt, err := libbox.Open(libbox.Options{Home: home})
		if err != nil {
			t.Fatal(err)
		}
		ctx := ctxT(t, 3*time.Minute)
		b, err := rt.Create(ctx, libbox.BoxOptions{Isolation: isolation, Name: "netkeep", Detach: true,
			Volumes: []libbox.Volume{{HostPath: os.Getenv("LIBBOX_TEST_NETPEER"), BoxPath: "/opt/t", ReadOnly: true}},
			Network: libbox.Network{Enabled: true, Ports: []libbox.PortMapping{{Host: "127.0.0.1:0", Box: 8080}}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
		// Out of the exec's process group (which ends with it), listening
		// before the exec returns.
		netSh(t, b, "setsid /opt/t/netpeer tcp-echo 8080 </dev/null >/tmp/echo.log 2>&1 & "+
			"while ! grep -q listening /tmp/echo.log; do sleep 0.05; done")
		fmt.Printf("addr=%s\n", b.Info().Network.Ports[0].Host)
		rt.Close()
		return
	}
	home := t.TempDir()
	removeAllOnCleanup(t, home)
	vol := netpeer(t)
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), "LIBBOX_TEST_DETACHED_NET_HOME="+home, "LIBBOX_TEST_NETPEER="+vol.HostPath)
	out, err := cmd.CombinedOutput()
	var addr string
	for _, l := range strings.Split(string(out), "\n") {
		if a, ok := strings.CutPrefix(l, "addr="); ok {
			addr = a
		}
	}
	if err != nil || addr == "" {
		t.Fatalf("starting process: %v\n%s", err, out)
	}
	helpers := netHelpers(home)
	if len(helpers) != 1 {
		t.Fatalf("network helpers after the starting process exited: %v", helpers)
	}
	echo := func(addr string) error {
		var err error
		for i := 0; i < 200; i++ { // until the echo server listens
			var c net.Conn
			if c, err = net.Dial("tcp", addr); err == nil {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				msg := []byte("still here")
				if _, err = c.Write(msg); err == nil {
					got := make([]byte, len(msg))
					if _, err = io.ReadFull(c, got); err == nil && !bytes.Equal(got, msg) {
						err = fmt.Errorf("echo %q, want %q", got, msg)
					}
				}
				c.Close()
				if err == nil {
					return nil
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		return err
	}
	if err := echo(addr); err != nil {
		t.Fatalf("published port %s after the starting process exited: %v", addr, err)
	}
	rt := openRT(t, home)
	ctx := ctxT(t, 3*time.Minute)
	b, err := rt.Get(ctx, "netkeep")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil { // follows the running box and its network
		t.Fatal(err)
	}
	if info := b.Info().Network; info == nil || len(info.Ports) != 1 || info.Ports[0].Host != addr {
		t.Fatalf("network info of the followed box: %+v", info)
	}
	m, err := b.Publish(libbox.PortMapping{Host: "127.0.0.1:0", Box: 8080})
	if err != nil {
		t.Fatal(err)
	}
	if err := echo(m.Host); err != nil {
		t.Fatalf("port published by the next process: %v", err)
	}
	if err := rt.Remove(ctx, b.ID(), true); err != nil {
		t.Fatal(err)
	}
	if left := netHelpers(home); len(left) != 0 {
		t.Fatalf("network helper still running after remove: %v", left)
	}
	// A helper that cannot publish a port fails the start with the bind's
	// error and leaves nothing running.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	bad, err := rt.Create(ctx, libbox.BoxOptions{Isolation: "sandbox", Detach: true, AutoRemove: true,
		Network: libbox.Network{Enabled: true, Ports: []libbox.PortMapping{{Host: taken.Addr().String(), Box: 80}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Start(ctx); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("start with a taken host port: %v", err)
	}
	if left := netHelpers(home); len(left) != 0 {
		t.Fatalf("network helper left by a failed start: %v", left)
	}
	if err := rt.Remove(ctx, bad.ID(), true); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{addr, m.Host} {
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("port %s still bound after remove: %v", a, err)
		}
		l.Close()
	}
}
