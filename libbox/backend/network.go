package backend

import (
	"net/netip"
	"os"
)

// NetworkLink connects a box to its user-mode network (libbox/network)
// without the backend knowing it: the backend makes the box's link (a tap
// fd from the sandbox agent, a socket QEMU writes frames to) and hands the
// host end to Attach.
type NetworkLink struct {
	Address netip.Prefix // the box's address and prefix
	Gateway netip.Addr   // default route and only DNS server
	MAC     string       // the box's MAC (VMs)
	MTU     int
	// Attach takes ownership of f, the host end of the box's link. stream
	// is false when every read and write of f is one Ethernet frame (a tap
	// fd), true when frames travel on a byte stream, each after its 4-byte
	// big-endian length (QEMU's -netdev stream).
	Attach func(f *os.File, stream bool) error
}
