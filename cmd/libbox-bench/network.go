package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/libbox/libbox/libbox"
	"github.com/libbox/libbox/libbox/network"
)

func init() { register("network", benchNetwork) }

// netBytes is the size of each throughput transfer.
const netBytes = 100 << 20

// benchNetwork: the same 100 MB transfer over host loopback and from the
// host into a box through a published port; box → host TCP connect
// latency; what the network adds to a box's start — for each backend
// asked for (VM rounds are fewer: TCG boots take seconds).
func benchNetwork(ctx context.Context, e *env) error {
	native, err := nativeTCP()
	if err != nil {
		return err
	}
	e.metric("net.native.tcp_mbps", native)
	for _, r := range []netRounds{{libbox.IsolationSandbox, 3, 500, 7}, {libbox.IsolationVM, 3, 200, 3}} {
		if !e.has(r.iso) {
			continue
		}
		if err := benchBoxNetwork(ctx, e, r); err != nil {
			return fmt.Errorf("%s: %w", r.iso, err)
		}
	}
	return nil
}

// netRounds is how much one backend's network bench measures.
type netRounds struct {
	iso                        string
	transfers, connects, start int
}

func benchBoxNetwork(ctx context.Context, e *env, rounds netRounds) error {
	iso := rounds.iso
	var ip netip.Addr
	for _, a := range network.HostAddrs() {
		if !a.IsLoopback() {
			ip = a
			break
		}
	}
	if !ip.IsValid() {
		return fmt.Errorf("no non-loopback IPv4 address for the box to connect to")
	}
	peer, err := buildNetpeer()
	if err != nil {
		return err
	}
	defer os.RemoveAll(filepath.Dir(peer))
	l, err := net.Listen("tcp4", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		return err
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	b, done, err := e.box(ctx, libbox.BoxOptions{
		Isolation: iso,
		Volumes:   []libbox.Volume{{HostPath: filepath.Dir(peer), BoxPath: "/opt/bench", ReadOnly: true}},
		Network:   libbox.Network{Enabled: true, Allow: []string{l.Addr().String()}, Ports: []libbox.PortMapping{{Box: 5001}}},
	})
	if err != nil {
		return err
	}
	defer done()
	var mbps []float64
	for i := 0; i < rounds.transfers; i++ {
		v, err := boxTCP(ctx, b)
		if err != nil {
			return err
		}
		mbps = append(mbps, v)
	}
	e.metric("net."+iso+".tcp_mbps", median(mbps))
	r, err := b.Run(ctx, libbox.Command{Args: []string{"/opt/bench/netpeer", "connect", l.Addr().String(), strconv.Itoa(rounds.connects)}})
	if err != nil {
		return err
	}
	if r.ExitCode != 0 {
		return fmt.Errorf("connect loop: %s", r.Stderr)
	}
	us, err := strconv.ParseFloat(strings.TrimSpace(string(r.Stdout)), 64)
	if err != nil {
		return fmt.Errorf("connect loop: %q", r.Stdout)
	}
	e.metric("net."+iso+".connect_p50_us", us)

	// Start to first exec, network on and off alternately. A VM box with a
	// network boots its kernel (no VM template holds a network yet): the
	// box without one does too, so the difference is the network's.
	startWith := func(on bool) (float64, error) {
		t := time.Now()
		b, done, err := e.box(ctx, libbox.BoxOptions{Isolation: iso, ColdBoot: true, Network: libbox.Network{Enabled: on}})
		if err != nil {
			return 0, err
		}
		defer done()
		if _, err := b.Run(ctx, libbox.Command{Args: []string{"true"}}); err != nil {
			return 0, err
		}
		return float64(time.Since(t).Microseconds()) / 1e3, nil
	}
	var with, without []float64
	for i := 0; i < rounds.start; i++ {
		a, err := startWith(true)
		if err != nil {
			return err
		}
		c, err := startWith(false)
		if err != nil {
			return err
		}
		with, without = append(with, a), append(without, c)
	}
	e.metric("start."+iso+"_net.first_exec_ms", median(with))
	e.metric("start."+iso+"_net.added_ms", median(with)-median(without))
	return nil
}

// nativeTCP sends netBytes over host loopback and returns Mbit/s.
func nativeTCP() (float64, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- 0
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		got <- n
	}()
	t := time.Now()
	c, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		return 0, err
	}
	if err := writeZeros(c, netBytes); err != nil {
		return 0, err
	}
	c.Close()
	if n := <-got; n != netBytes {
		return 0, fmt.Errorf("loopback transfer: %d of %d bytes", n, netBytes)
	}
	return mbit(netBytes, time.Since(t)), nil
}

// boxTCP sends netBytes from the host into the box's published port (a
// counting sink in the box) and returns Mbit/s. The sink is netpeer's,
// which reads 256 KiB at a time: busybox nc reads 1 KiB per syscall, and
// with it the box's copy loop, not the network, was measured.
func boxTCP(ctx context.Context, b *libbox.Box) (float64, error) {
	p, err := b.Exec(ctx, libbox.Command{Args: []string{"/opt/bench/netpeer", "sink", "5001"}})
	if err != nil {
		return 0, err
	}
	for i := 0; ; i++ { // until the sink listens
		r, err := b.Run(ctx, libbox.Command{Args: []string{"sh", "-c", "netstat -ltn | grep -q ':5001 '"}})
		if err != nil {
			return 0, err
		}
		if r.ExitCode == 0 {
			break
		}
		if i > 200 {
			return 0, fmt.Errorf("the box's sink does not listen")
		}
		time.Sleep(10 * time.Millisecond)
	}
	c, err := net.Dial("tcp4", b.Info().Network.Ports[0].Host)
	if err != nil {
		return 0, err
	}
	t := time.Now()
	if err := writeZeros(c, netBytes); err != nil {
		return 0, err
	}
	c.Close()
	st, err := p.Wait(ctx)
	if err != nil {
		return 0, err
	}
	el := time.Since(t)
	out, _ := p.Output()
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	if st.ExitCode != 0 || n < netBytes {
		return 0, fmt.Errorf("box received %q bytes of %d", out, netBytes)
	}
	return mbit(netBytes, el), nil
}

func writeZeros(w io.Writer, n int) error {
	buf := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, len(buf))
		if _, err := w.Write(buf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func mbit(bytes int, d time.Duration) float64 { return float64(bytes) * 8 / d.Seconds() / 1e6 }

// buildNetpeer builds the static network tool the boxes run.
func buildNetpeer() (string, error) {
	dir, err := os.MkdirTemp("", "libbox-bench-net-")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "netpeer")
	cmd := exec.Command("go", "build", "-o", out, "./libbox/testdata/netpeer")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("build netpeer (run the bench from the repository root): %v\n%s", err, b)
	}
	return out, nil
}
