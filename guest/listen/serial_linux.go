package listen

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// serialPoll is how often a listener looks for the host while it is away.
const serialPoll = 20 * time.Millisecond

// Serial serves one connection at a time over a virtio-serial port (a
// character device such as /dev/vport1p1). The host end is a unix socket
// QEMU serves; the host may disconnect and reconnect any number of times.
//
// The port is opened once and stays open: closing it would discard what
// the host already sent (the next host's first bytes). Connections are
// delimited by a handshake instead (see handshake): Accept waits for the
// host, then for its hello, and answers it. While the host is away the
// port reports POLLHUP and read returns 0, so a connection ends with
// io.EOF when the host leaves.
//
// The host does not notice when the guest closes a connection (the port
// stays open): its stream just stops being answered, and it must redial.
func Serial(dev string) (net.Listener, error) {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("serial listener: open %s: %w", dev, err)
	}
	// A non-blocking fd makes the file pollable: reads and writes park in
	// the runtime poller and deadlines work.
	l := &serialListener{
		dev:    dev,
		f:      os.NewFile(uintptr(fd), dev),
		closed: make(chan struct{}),
		free:   make(chan []byte, 1),
	}
	l.free <- nil
	return l, nil
}

type serialListener struct {
	dev       string
	f         *os.File // the port, open for the listener's life
	closeOnce sync.Once
	closed    chan struct{}
	// free holds a token while no connection is open: the bytes the
	// previous connection read but did not own (they may hold the hello
	// of the host that came next), or nil.
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
		err := l.waitHost()
		if err == nil {
			var rest []byte
			rest, err = l.handshake(carry)
			if err == nil {
				return &serialConn{l: l, pending: rest}, nil
			}
		}
		carry = nil
		if errors.Is(err, net.ErrClosed) {
			l.f.Close()
			return nil, err
		}
		if !errors.Is(err, io.EOF) {
			l.free <- nil
			return nil, err
		}
		// The host left during the handshake: wait for the next one.
	}
}

// waitHost returns once the host end is connected (no POLLHUP).
func (l *serialListener) waitHost() error {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return err
	}
	for {
		var hup bool
		var perr error
		err := rc.Control(func(fd uintptr) {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLOUT}}
			_, perr = unix.Poll(pfd, 0)
			hup = pfd[0].Revents&unix.POLLHUP != 0
		})
		if err != nil {
			return err
		}
		if perr != nil && !errors.Is(perr, unix.EINTR) {
			return fmt.Errorf("serial listener: poll %s: %w", l.dev, perr)
		}
		if perr == nil && !hup {
			return nil
		}
		if !l.sleep() {
			return net.ErrClosed
		}
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

// handshake waits for a hello (carry holds bytes read earlier), answers
// it, and returns the bytes that followed it. io.EOF: the host left.
func (l *serialListener) handshake(carry []byte) ([]byte, error) {
	buf := carry
	tmp := make([]byte, 4096)
	defer l.f.SetDeadline(time.Time{})
	for {
		if nonce, rest, ok := findHello(buf); ok {
			_ = l.f.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := l.f.Write([]byte(readyPrefix + nonce + "\n")); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					err = io.EOF // the host went away again
				}
				return nil, err
			}
			return rest, nil
		}
		if len(buf) > 64<<10 { // stale bytes: keep only a possible partial hello
			buf = append([]byte(nil), buf[len(buf)-64:]...)
		}
		select {
		case <-l.closed:
			return nil, net.ErrClosed
		default:
		}
		_ = l.f.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := l.f.Read(tmp)
		buf = append(buf, tmp[:n]...)
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

// Close stops Accept. An open connection stays usable until it is closed;
// the port is closed with the last connection.
func (l *serialListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.closed)
		select {
		case <-l.free: // no connection: close the port now
			l.f.Close()
		default:
		}
	})
	return nil
}

func (l *serialListener) Addr() net.Addr { return serialAddr(l.dev) }

type serialAddr string

func (a serialAddr) Network() string { return "serial" }
func (a serialAddr) String() string  { return string(a) }

// serialConn is one host session on the listener's port. Read returns
// io.EOF when the host goes away (read(2) returns 0).
//
// When the host leaves and a new one connects before the guest read the
// 0, this connection reads the new host's hello as if it were its own
// stream, fails, and is closed by the server: so a connection closed
// without having seen EOF hands its last bytes (and whatever a read in
// flight at Close returned) to the next Accept.
type serialConn struct {
	l       *serialListener
	pending []byte // read after the handshake, not yet returned; reader only
	closed  atomic.Bool

	closeOnce sync.Once
	readMu    sync.Mutex // held during a read of the port
	// tail is the last bytes read, eof whether read returned 0, and
	// leftover what reads returned after Close began; guarded by readMu.
	tail     []byte
	eof      bool
	leftover []byte
	writeMu  sync.Mutex // held during a write to the port
}

// tailLen is how much of the stream a connection remembers for the next.
const tailLen = 256

func (c *serialConn) Read(b []byte) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	n, err := c.l.f.Read(b)
	if c.closed.Load() { // the bytes belong to whoever comes next
		c.leftover = append(c.leftover, b[:n]...)
		return 0, net.ErrClosed
	}
	if n > 0 {
		c.tail = append(c.tail, b[max(0, n-tailLen):n]...)
		if len(c.tail) > tailLen {
			c.tail = append(c.tail[:0], c.tail[len(c.tail)-tailLen:]...)
		}
	}
	if err == io.EOF {
		c.eof = true
	}
	return n, err
}

func (c *serialConn) Write(b []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	n, err := c.l.f.Write(b)
	if err != nil && c.closed.Load() {
		err = net.ErrClosed
	}
	return n, err
}

// Close ends the session: reads and writes in flight return, and the next
// Accept may start. The port stays open.
func (c *serialConn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		_ = c.l.f.SetDeadline(time.Unix(1, 0)) // wake reads and writes in flight
		c.readMu.Lock()
		c.writeMu.Lock()
		var carry []byte
		if !c.eof {
			carry = append(c.tail, c.leftover...)
		}
		c.writeMu.Unlock()
		c.readMu.Unlock()
		_ = c.l.f.SetDeadline(time.Time{})
		select {
		case <-c.l.closed:
			c.l.f.Close()
		default:
			c.l.free <- carry
		}
	})
	return nil
}

func (c *serialConn) LocalAddr() net.Addr  { return serialAddr(c.l.dev) }
func (c *serialConn) RemoteAddr() net.Addr { return serialAddr("host") }

func (c *serialConn) SetDeadline(t time.Time) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	return c.l.f.SetDeadline(t)
}

func (c *serialConn) SetReadDeadline(t time.Time) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	return c.l.f.SetReadDeadline(t)
}

func (c *serialConn) SetWriteDeadline(t time.Time) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	return c.l.f.SetWriteDeadline(t)
}
