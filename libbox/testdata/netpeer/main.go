// netpeer is the network tests' tool inside a box (static, no libc):
//
//	netpeer tcp-echo PORT | udp-echo PORT     serve until killed
//	netpeer tcp ADDR                          connect; "connected" or the error
//	netpeer udp ADDR MSG                      send, print the reply (resent for 10s)
//	netpeer spoof SRC ADDR MSG                one UDP datagram from a forged source (raw socket)
//	netpeer connect ADDR N                    N TCP connects; print the median in µs
//	netpeer sink PORT                         accept one TCP connection, read it to
//	                                          the end (256 KiB reads), print the byte count
package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "netpeer:", err)
		os.Exit(1)
	}
}

func run(a []string) error {
	if len(a) < 2 {
		return fmt.Errorf("usage: see the source")
	}
	switch a[0] {
	case "tcp-echo":
		l, err := net.Listen("tcp4", ":"+a[1])
		if err != nil {
			return err
		}
		fmt.Println("listening")
		for {
			c, err := l.Accept()
			if err != nil {
				return err
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	case "udp-echo":
		c, err := net.ListenPacket("udp4", ":"+a[1])
		if err != nil {
			return err
		}
		fmt.Println("listening")
		buf := make([]byte, 65536)
		for {
			k, from, err := c.ReadFrom(buf)
			if err != nil {
				return err
			}
			c.WriteTo(buf[:k], from)
		}
	case "tcp":
		// Generous: 64 of these start at once in an emulated (TCG) VM on a
		// loaded host, and a starved process sees its deadline pass first.
		c, err := net.DialTimeout("tcp4", a[1], 30*time.Second)
		if err != nil {
			return err
		}
		c.Close()
		fmt.Println("connected")
		return nil
	case "udp":
		c, err := net.Dial("udp4", a[1])
		if err != nil {
			return err
		}
		buf := make([]byte, 65536)
		for i := 0; ; i++ { // datagrams may be lost: resend, 10s in all
			c.SetDeadline(time.Now().Add(500 * time.Millisecond))
			if _, err := c.Write([]byte(a[2])); err != nil {
				return err
			}
			k, err := c.Read(buf)
			if err == nil {
				fmt.Println(string(buf[:k]))
				return nil
			}
			if i == 19 {
				return err
			}
		}
	case "sink":
		l, err := net.Listen("tcp4", ":"+a[1])
		if err != nil {
			return err
		}
		c, err := l.Accept()
		l.Close()
		if err != nil {
			return err
		}
		defer c.Close()
		// A plain read loop: io.Copy to io.Discard would read 8 KiB at a time.
		buf := make([]byte, 256<<10)
		var n int64
		for {
			k, err := c.Read(buf)
			n += int64(k)
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		fmt.Println(n)
		return nil
	case "spoof":
		return spoof(a[1], a[2], a[3])
	case "connect":
		n, err := strconv.Atoi(a[2])
		if err != nil || n < 1 {
			return fmt.Errorf("connect: bad count %q", a[2])
		}
		ds := make([]time.Duration, 0, n)
		for i := 0; i < n; i++ {
			t := time.Now()
			c, err := net.DialTimeout("tcp4", a[1], 5*time.Second)
			if err != nil {
				return err
			}
			ds = append(ds, time.Since(t))
			c.Close()
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		fmt.Printf("%.1f\n", float64(ds[n/2].Nanoseconds())/1e3)
		return nil
	}
	return fmt.Errorf("unknown mode %q", a[0])
}

func spoof(src, dst, msg string) error {
	s := netip.MustParseAddr(src).As4()
	d := netip.MustParseAddrPort(dst)
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	udp := make([]byte, 8+len(msg))
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], d.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], msg)
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, syscall.IPPROTO_UDP
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	copy(ip[12:16], s[:])
	da := d.Addr().As4()
	copy(ip[16:20], da[:])
	return syscall.Sendto(fd, append(ip, udp...), 0, &syscall.SockaddrInet4{Addr: da})
}
