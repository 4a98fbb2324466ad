//go:build linux

package qemu

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/bootparam"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/internal/vmboot"
)

// netFD is QEMU's fd number of its end of the network link: the first of
// spawn's extra files.
const netFD = 3

// netLink is a VM's network link: a unix stream socket pair, one end
// QEMU's (-netdev stream over an fd: each frame after its 4-byte
// big-endian length), the other handed to the box's network
// (backend.NetworkLink.Attach) before QEMU starts, so a frame is never
// lost: the socket buffers until both sides run.
type netLink struct {
	qemu *os.File // QEMU's end; closed in this process once QEMU has it
}

// newNetLink makes the link of a box with a network, attaches the host end,
// and returns QEMU's arguments for it (-nic none without a network). It
// sets box's network parameters. A nil *netLink is valid and holds nothing.
func newNetLink(spec backend.Spec, m machine, box *vmboot.Box) (*netLink, []string, error) {
	if !spec.Network {
		return nil, []string{"-nic", "none"}, nil
	}
	l := spec.NetLink
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, errdefs.Wrap(errdefs.Internal, err, "qemu: network socket pair")
	}
	nl := &netLink{qemu: os.NewFile(uintptr(fds[1]), "net-qemu")}
	if err := l.Attach(os.NewFile(uintptr(fds[0]), "net-host"), true); err != nil {
		nl.close()
		return nil, nil, err
	}
	box.Network = true
	box.Net = &bootparam.NetSpec{Address: l.Address.String(), Gateway: l.Gateway.String(), MTU: l.MTU}
	dev := m.device("virtio-net") + ",netdev=net0"
	if l.MAC != "" {
		dev += ",mac=" + l.MAC
	}
	return nl, []string{
		"-netdev", "stream,id=net0,server=off,addr.type=fd,addr.str=" + strconv.Itoa(netFD),
		"-device", dev,
	}, nil
}

// files are the fds QEMU inherits (from netFD on).
func (nl *netLink) files() []*os.File {
	if nl == nil {
		return nil
	}
	return []*os.File{nl.qemu}
}

// close closes this process's copy of QEMU's end.
func (nl *netLink) close() {
	if nl != nil {
		nl.qemu.Close()
	}
}
