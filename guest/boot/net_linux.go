package boot

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/guest/bootparam"
)

// boxIface is the name of the box's network interface.
const boxIface = bootparam.NetIface

// sandboxNet configures the box's tap device: the one the host made in the
// sandbox's network namespace, or (Net.FD set) one it makes here and hands
// to the host (which runs the other end of the link). It runs before
// pivot_root: /dev/net/tun is the host's.
func sandboxNet(s *bootparam.SandboxSpec) error {
	if s.Net == nil {
		return nil
	}
	if s.Net.FD == 0 {
		return configureLink(boxIface, *s.Net)
	}
	defer unix.Close(s.Net.FD)
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("open /dev/net/tun: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(boxIface)
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("create tap %s: %w", boxIface, err)
	}
	if err := configureLink(boxIface, *s.Net); err != nil {
		return err
	}
	if err := unix.Sendmsg(s.Net.FD, []byte{1}, unix.UnixRights(fd), nil, 0); err != nil {
		return fmt.Errorf("send tap fd to the host: %w", err)
	}
	return nil
}

// writeResolv points the box's resolver at the gateway, under root.
func writeResolv(root string, n *bootparam.NetSpec) error {
	if n == nil {
		return nil
	}
	p := filepath.Join(root, "etc", "resolv.conf")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	_ = os.Remove(p) // a symlink (systemd's stub) or the image's file
	return os.WriteFile(p, []byte("nameserver "+n.Gateway+"\noptions ndots:0\n"), 0o644)
}

// configureLink gives an interface its address and MTU, brings it up and
// routes everything through the gateway. IPv6 is switched off: the
// network carries IPv4 only.
func configureLink(name string, n bootparam.NetSpec) error {
	if err := n.Validate(); err != nil {
		return err
	}
	pfx := netip.MustParsePrefix(n.Address)
	gw := netip.MustParseAddr(n.Gateway)
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0)
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ioctl := func(what string, req uint, set func(*unix.Ifreq) error) error {
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		if set != nil {
			if err := set(ifr); err != nil {
				return err
			}
		}
		if err := unix.IoctlIfreq(s, req, ifr); err != nil {
			return fmt.Errorf("%s of %s: %w", what, name, err)
		}
		return nil
	}
	mask := netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, ^uint32(0)<<(32-pfx.Bits()))))
	if err := ioctl("address", unix.SIOCSIFADDR, func(r *unix.Ifreq) error { return r.SetInet4Addr(pfx.Addr().AsSlice()) }); err != nil {
		return err
	}
	if err := ioctl("netmask", unix.SIOCSIFNETMASK, func(r *unix.Ifreq) error { return r.SetInet4Addr(mask.AsSlice()) }); err != nil {
		return err
	}
	if n.MTU > 0 {
		if err := ioctl("mtu", unix.SIOCSIFMTU, func(r *unix.Ifreq) error { r.SetUint32(uint32(n.MTU)); return nil }); err != nil {
			return err
		}
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("flags of %s: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up %s: %w", name, err)
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFINDEX, ifr); err != nil {
		return fmt.Errorf("index of %s: %w", name, err)
	}
	return addDefaultRoute(gw, ifr.Uint32())
}

// addDefaultRoute adds "default via gw dev ifindex" over rtnetlink.
func addDefaultRoute(gw netip.Addr, ifindex uint32) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	le := binary.NativeEndian
	attr := func(b []byte, typ uint16, data []byte) []byte {
		b = le.AppendUint16(b, uint16(4+len(data)))
		b = le.AppendUint16(b, typ)
		b = append(b, data...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	body := []byte{unix.AF_INET, 0, 0, 0, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST}
	body = le.AppendUint32(body, 0) // rtm_flags
	gw4 := gw.As4()
	body = attr(body, unix.RTA_GATEWAY, gw4[:])
	body = attr(body, unix.RTA_OIF, le.AppendUint32(nil, ifindex))
	msg := le.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+len(body)))
	msg = le.AppendUint16(msg, unix.RTM_NEWROUTE)
	msg = le.AppendUint16(msg, unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_EXCL)
	msg = le.AppendUint32(msg, 1) // seq
	msg = le.AppendUint32(msg, 0) // pid
	msg = append(msg, body...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("add default route: %w", err)
	}
	buf := make([]byte, 4096)
	k, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("add default route: %w", err)
	}
	if k >= unix.NLMSG_HDRLEN+4 && le.Uint16(buf[4:6]) == unix.NLMSG_ERROR {
		if code := int32(le.Uint32(buf[unix.NLMSG_HDRLEN:])); code != 0 {
			return fmt.Errorf("add default route via %s: %w", gw, unix.Errno(-code))
		}
	}
	return nil
}
