package listen

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// serialPoll is how often a listener looks for the host while it is away.
const serialPoll = 20 * time.Millisecond

// Serial serves one connection at a time over a virtio-serial port (a
// character device such as /dev/vport1p1). The host end is a unix socket
// QEMU serves; the host may disconnect and reconnect any number of times.
//
// While the host is away the port reports POLLHUP and read returns 0, so a
// connection ends with io.EOF when the host leaves; Accept then waits until
// the previous connection was closed and the host is back, and hands out a
// new connection on a fresh open of the port.
//
// The host end does not notice when the guest closes the port: bytes in
// flight are discarded and the host's stream goes on. A connection should
// therefore only be closed by the host going away (or by the agent
// exiting); a host that stops getting answers must reconnect.
func Serial(dev string) (net.Listener, error) {
	// Only check that the port exists: closing a port discards what the
	// host already sent (a client's first bytes), so it is opened once per
	// connection, by Accept.
	if _, err := os.Stat(dev); err != nil {
		return nil, fmt.Errorf("serial listener: %w", err)
	}
	l := &serialListener{dev: dev, closed: make(chan struct{}), free: make(chan []byte, 1)}
	l.free <- nil
	return l, nil
}

type serialListener struct {
	dev       string
	closeOnce sync.Once
	closed    chan struct{}
	// free holds a token while no connection is open: the last bytes the
	// previous connection read when it failed (they may hold the hello of
	// the host that came next), or nil.
	free chan []byte
}

func (l *serialListener) Accept() (net.Conn, error) {
	var carry []byte
	select {
	case <-l.closed:
		return nil, net.ErrClosed
	case carry = <-l.free:
	}
	for {
		fd, err := l.open()
		if err == nil {
			err = l.waitHost(fd)
			if err != nil {
				unix.Close(fd)
			}
		}
		if err != nil {
			l.free <- nil
			return nil, err
		}
		// A non-blocking fd makes the file pollable: reads and writes park
		// in the runtime poller and deadlines work.
		f := os.NewFile(uintptr(fd), l.dev)
		rest, err := l.handshake(f, carry)
		carry = nil
		if err == nil {
			return &serialConn{File: f, l: l, pending: rest}, nil
		}
		f.Close()
		if errors.Is(err, net.ErrClosed) {
			l.free <- nil
			return nil, err
		}
		// The host left during the handshake: wait for the next one.
	}
}

// The stream handshake. The port is one byte stream shared by every host
// connection in turn, and neither end reliably sees the other leave (a
// quick reconnect hides the host's absence from the guest; a guest close
// is invisible to the host). So each host connection starts with
// "LIBBOX-HELLO <16 hex>\n"; the guest discards everything before it and
// answers "LIBBOX-READY <same hex>\n"; the host discards everything before
// that answer. Both ends then speak gRPC from a known byte.
const (
	helloPrefix = "LIBBOX-HELLO "
	readyPrefix = "LIBBOX-READY "
	nonceLen    = 16
)

// handshake waits for a hello on f (or in carry), answers it, and returns
// the bytes that followed it.
func (l *serialListener) handshake(f *os.File, carry []byte) ([]byte, error) {
	buf := carry
	tmp := make([]byte, 4096)
	for {
		select {
		case <-l.closed:
			return nil, net.ErrClosed
		default:
		}
		_ = f.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := f.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if nonce, rest, ok := findHello(buf); ok {
			_ = f.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := f.Write([]byte(readyPrefix + nonce + "\n")); err != nil {
				return nil, err
			}
			_ = f.SetDeadline(time.Time{})
			return rest, nil
		}
		if len(buf) > 64<<10 { // stale bytes: keep only a possible partial hello
			buf = append([]byte(nil), buf[len(buf)-64:]...)
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, err
		}
	}
}

// findHello finds the last complete hello line in b.
func findHello(b []byte) (nonce string, rest []byte, ok bool) {
	s := string(b)
	for {
		i := strings.LastIndex(s, helloPrefix)
		if i < 0 {
			return "", nil, false
		}
		line := s[i+len(helloPrefix):]
		if len(line) > nonceLen && line[nonceLen] == '\n' && isHex(line[:nonceLen]) {
			return line[:nonceLen], b[i+len(helloPrefix)+nonceLen+1:], true
		}
		s = s[:i] // incomplete or bad: an earlier one may be whole
	}
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// open opens the port, retrying while a closing connection still holds it
// (EBUSY) or the listener is open.
func (l *serialListener) open() (int, error) {
	for {
		fd, err := unix.Open(l.dev, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.EINTR) {
			return -1, fmt.Errorf("serial listener: open %s: %w", l.dev, err)
		}
		if !l.sleep() {
			return -1, net.ErrClosed
		}
	}
}

// waitHost returns once the host end is connected (no POLLHUP).
func (l *serialListener) waitHost(fd int) error {
	for {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLOUT}}
		_, err := unix.Poll(pfd, 0)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("serial listener: poll %s: %w", l.dev, err)
		}
		if err == nil && pfd[0].Revents&unix.POLLHUP == 0 {
			return nil
		}
		if !l.sleep() {
			return net.ErrClosed
		}
	}
}

// sleep waits one poll interval; false when the listener was closed.
func (l *serialListener) sleep() bool {
	t := time.NewTimer(serialPoll)
	defer t.Stop()
	select {
	case <-l.closed:
		return false
	case <-t.C:
		return true
	}
}

// Close stops Accept. An open connection stays usable until it is closed.
func (l *serialListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *serialListener) Addr() net.Addr { return serialAddr(l.dev) }

type serialAddr string

func (a serialAddr) Network() string { return "serial" }
func (a serialAddr) String() string  { return string(a) }

// serialConn is one host session on the port. Read returns io.EOF when the
// host goes away (read(2) returns 0).
//
// When the host leaves and a new one connects before the guest read the
// 0, this connection reads the new host's hello as if it were its own
// stream, fails, and is closed by the server: so a connection closed
// without having seen EOF hands its last bytes to the next Accept.
type serialConn struct {
	*os.File
	pending   []byte // read after the handshake, not yet returned; reader only
	l         *serialListener
	closeOnce sync.Once
	err       error

	mu sync.Mutex
	// tail is the last bytes read and eof whether read returned 0;
	// guarded by mu.
	tail []byte
	eof  bool
}

// tailLen is how much of the stream a connection remembers for the next.
const tailLen = 256

func (c *serialConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	n, err := c.File.Read(b)
	c.mu.Lock()
	if n > 0 {
		c.tail = append(c.tail, b[max(0, n-tailLen):n]...)
		if len(c.tail) > tailLen {
			c.tail = append(c.tail[:0], c.tail[len(c.tail)-tailLen:]...)
		}
	}
	if err == io.EOF {
		c.eof = true
	}
	c.mu.Unlock()
	return n, err
}

func (c *serialConn) Close() error {
	c.closeOnce.Do(func() {
		c.err = c.File.Close()
		c.mu.Lock()
		var carry []byte
		if !c.eof {
			carry = c.tail
		}
		c.mu.Unlock()
		c.l.free <- carry
	})
	return c.err
}

func (c *serialConn) LocalAddr() net.Addr  { return serialAddr(c.l.dev) }
func (c *serialConn) RemoteAddr() net.Addr { return serialAddr("host") }
