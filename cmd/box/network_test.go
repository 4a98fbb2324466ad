package main

import (
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/libbox/libbox/libbox/network"
)

func TestRunNetwork(t *testing.T) {
	requireRoot(t)
	var ip netip.Addr
	for _, a := range network.HostAddrs() {
		if !a.IsLoopback() {
			ip = a
			break
		}
	}
	if !ip.IsValid() {
		t.Skip("no non-loopback IPv4 address: bring up an interface with an address")
	}
	l, err := net.Listen("tcp4", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hello from the host\n")
			c.Close()
		}
	}()
	port := strconv.Itoa(int(netip.MustParseAddrPort(l.Addr().String()).Port()))
	home := t.TempDir()
	r := box(t, home, "", "run", "--rm", "--isolation", "sandbox", "--network", "--allow-net", "db:"+port,
		"--add-host", "db:"+ip.String(), "-p", "0:8080", "busybox",
		"sh", "-c", "nc -w 5 db "+port+"; nslookup pypi.org >/dev/null 2>&1 || echo pypi denied; nc -w 5 "+ip.String()+" 1 </dev/null")
	if !strings.Contains(r.out, "hello from the host") || !strings.Contains(r.out, "pypi denied") || !strings.Contains(r.err, "refused") {
		t.Fatalf("run with network: code %d out %q err %q", r.code, r.out, r.err)
	}
	if r := box(t, home, "", "run", "--rm", "--isolation", "sandbox", "--allow-net", "pypi.org", "busybox", "true"); r.code == 0 || !strings.Contains(r.err, "need --network") {
		t.Fatalf("--allow-net without --network: code %d err %q", r.code, r.err)
	}
	if r := box(t, home, "", "run", "--rm", "--isolation", "sandbox", "--network", "-p", "x:y", "busybox", "true"); r.code == 0 || !strings.Contains(r.err, "-p") {
		t.Fatalf("bad -p: code %d err %q", r.code, r.err)
	}
}
