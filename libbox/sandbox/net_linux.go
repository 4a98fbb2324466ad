package sandbox

import (
	"context"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/bootparam"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/internal/launch"
)

// netFD is the agent's fd number of its socket to the host for the tap fd
// (after the listener 3, boot socket 4, spec 5 and agent binary 6).
const netFD = 7

// netLink gives a sandbox its tap device, the box end of its link, and
// hands the host end to the box's network. Who opens /dev/net/tun depends
// on the host:
//
//   - root host: the box's root is an unprivileged slice of host ids and
//     cannot open /dev/net/tun, so the host makes the tap, from a thread
//     that joined the box's network namespace (makeTap). The agent finds
//     the interface there and configures it (the same code configures a
//     VM's interface, from the same boot contract).
//   - a user's host: the box's root is that user; the agent opens the tap
//     itself and sends its fd over a socket pair (SCM_RIGHTS), since the
//     host cannot join a namespace its user namespace does not own.
type netLink struct {
	link          *backend.NetworkLink
	child, parent *os.File // the socket pair of a user's host; nil on a root host
}

// newNetLink prepares the link and the agent's NetSpec (nil, nil when the
// box has no network). hostTap says the host makes the tap.
func newNetLink(link *backend.NetworkLink, hostTap bool) (*netLink, *bootparam.NetSpec, error) {
	if link == nil {
		return nil, nil, nil
	}
	spec := &bootparam.NetSpec{Address: link.Address.String(), Gateway: link.Gateway.String(), MTU: link.MTU}
	if hostTap {
		return &netLink{link: link}, spec, nil
	}
	// The agent opens /dev/net/tun as the box's root, which is this user:
	// fail now, clearly, when that user cannot.
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return nil, nil, errdefs.Wrap(errdefs.FailedPrecondition, err,
			"network: a sandbox started by a user other than root needs read and write access to /dev/net/tun (run as root, or chmod 0666 /dev/net/tun, or turn the network off)")
	}
	f.Close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, errdefs.Wrap(errdefs.Internal, err, "network socket pair")
	}
	spec.FD = netFD
	return &netLink{link: link, child: os.NewFile(uintptr(fds[1]), "net-agent"), parent: os.NewFile(uintptr(fds[0]), "net-host")}, spec, nil
}

// agentFile is the socket the agent inherits as netFD (nil: none).
func (nl *netLink) agentFile() *os.File {
	if nl == nil {
		return nil
	}
	return nl.child
}

// close releases what attach did not take. Safe on nil.
func (nl *netLink) close() {
	if nl != nil && nl.child != nil {
		nl.child.Close()
		nl.parent.Close()
	}
}

// attach makes (or receives) the tap of the agent pid and attaches it to
// the network. On a root host it must run before the agent configures its
// network (the agent waits for the host's mounts first).
func (nl *netLink) attach(ctx context.Context, pid int) error {
	if nl == nil {
		return nil
	}
	var f *os.File
	var err error
	if nl.child == nil {
		f, err = makeTap(pid)
	} else {
		f, err = nl.receive(ctx)
	}
	if err != nil {
		return err
	}
	return nl.link.Attach(f, false)
}

// makeTap opens /dev/net/tun in the network namespace of pid and makes the
// tap bootparam.NetIface there (one Ethernet frame per read and write, no
// packet information header). The thread that joined the namespace is
// discarded (see launch.InNamespace).
func makeTap(pid int) (*os.File, error) {
	fd := -1
	err := launch.InNamespace(pid, "net", func() error {
		// The tap belongs to the network namespace of the thread opening it.
		var err error
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(bootparam.NetIface)
		if err == nil {
			ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
			err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
		}
		if err != nil {
			unix.Close(fd)
			fd = -1
		}
		return err
	})
	if err != nil {
		return nil, errdefs.Wrap(errdefs.FailedPrecondition, err,
			"network: cannot make the box's tap device (needs /dev/net/tun: modprobe tun; or turn the network off)")
	}
	return os.NewFile(uintptr(fd), "tap"), nil
}

// receive waits (bounded by ctx) for the agent's tap fd.
func (nl *netLink) receive(ctx context.Context) (*os.File, error) {
	nl.child.Close()
	defer nl.parent.Close()
	c, err := net.FileConn(nl.parent)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "network socket")
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	if dl, ok := ctx.Deadline(); ok {
		_ = uc.SetReadDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = uc.SetReadDeadline(time.Now()) })
	defer stop()
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Unavailable, err, "sandbox agent did not hand over its network device (see agent.log)")
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, errdefs.New(errdefs.Internal, "sandbox agent sent no network device")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, errdefs.New(errdefs.Internal, "sandbox agent sent no network device")
	}
	return os.NewFile(uintptr(fds[0]), "tap"), nil
}
