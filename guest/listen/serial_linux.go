package listen

import (
	"errors"
	"fmt"
	"net"
	"os"
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
func Serial(dev string) (net.Listener, error) {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("serial listener: open %s: %w", dev, err)
	}
	unix.Close(fd) // only checking that the port exists and is free
	l := &serialListener{dev: dev, closed: make(chan struct{}), free: make(chan struct{}, 1)}
	l.free <- struct{}{}
	return l, nil
}

type serialListener struct {
	dev       string
	closeOnce sync.Once
	closed    chan struct{}
	free      chan struct{} // holds a token while no connection is open
}

func (l *serialListener) Accept() (net.Conn, error) {
	select {
	case <-l.closed:
		return nil, net.ErrClosed
	case <-l.free:
	}
	fd, err := l.open()
	if err == nil {
		err = l.waitHost(fd)
		if err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		l.free <- struct{}{}
		return nil, err
	}
	// A non-blocking fd makes the file pollable: reads and writes park in
	// the runtime poller and deadlines work.
	f := os.NewFile(uintptr(fd), l.dev)
	return &serialConn{File: f, l: l}, nil
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
type serialConn struct {
	*os.File
	l         *serialListener
	closeOnce sync.Once
	err       error
}

func (c *serialConn) Close() error {
	c.closeOnce.Do(func() {
		c.err = c.File.Close()
		c.l.free <- struct{}{}
	})
	return c.err
}

func (c *serialConn) LocalAddr() net.Addr  { return serialAddr(c.l.dev) }
func (c *serialConn) RemoteAddr() net.Addr { return serialAddr("host") }
