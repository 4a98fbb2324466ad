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
)

// netFD is the agent's fd number of its socket to the host for the tap fd
// (after the listener 3, boot socket 4, spec 5 and agent binary 6).
const netFD = 7

// netLink is the host's side of handing a sandbox its tap device: a unix
// socket pair, one end for the agent (fd netFD), over which the agent
// sends the tap fd it made in the sandbox's network namespace.
type netLink struct {
	link          *backend.NetworkLink
	child, parent *os.File
}

// newNetLink prepares the socket pair and the agent's NetSpec (nil, nil
// when the box has no network).
func newNetLink(link *backend.NetworkLink) (*netLink, *bootparam.NetSpec, error) {
	if link == nil {
		return nil, nil, nil
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, errdefs.Wrap(errdefs.Internal, err, "network socket pair")
	}
	nl := &netLink{link: link, child: os.NewFile(uintptr(fds[1]), "net-agent"), parent: os.NewFile(uintptr(fds[0]), "net-host")}
	return nl, &bootparam.NetSpec{FD: netFD, Address: link.Address.String(), Gateway: link.Gateway.String(), MTU: link.MTU}, nil
}

// close releases what receive did not take. Safe on nil.
func (nl *netLink) close() {
	if nl != nil {
		nl.child.Close()
		nl.parent.Close()
	}
}

// receive waits (bounded by ctx) for the agent's tap fd and attaches it.
func (nl *netLink) receive(ctx context.Context) error {
	if nl == nil {
		return nil
	}
	nl.child.Close()
	defer nl.parent.Close()
	c, err := net.FileConn(nl.parent)
	if err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "network socket")
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
		return errdefs.Wrap(errdefs.Unavailable, err, "sandbox agent did not hand over its network device (see agent.log)")
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return errdefs.New(errdefs.Internal, "sandbox agent sent no network device")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return errdefs.New(errdefs.Internal, "sandbox agent sent no network device")
	}
	return nl.link.Attach(os.NewFile(uintptr(fds[0]), "tap"), false)
}
