package bootparam

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ParamNet configures a VM's network interface: ADDR/PREFIX,GATEWAY,MTU
// (the gateway is also the box's DNS server).
const ParamNet = "libbox.net"

// NetIface is the name of the box's network interface.
const NetIface = "eth0"

// NetSpec is the box's side of its network link: a static address (no
// DHCP), the gateway as default route and only DNS server.
type NetSpec struct {
	// FD, when not 0, is the sandbox agent's unix socket to the host: the
	// agent makes the tap NetIface, sends its fd over it (SCM_RIGHTS), then
	// closes it. 0: the host made NetIface in the box's network namespace
	// before the agent's mounts (and in VMs, it is the virtio NIC).
	FD      int    `json:"fd,omitempty"`
	Address string `json:"address"` // e.g. 192.168.127.2/24
	Gateway string `json:"gateway"`
	MAC     string `json:"mac,omitempty"`
	MTU     int    `json:"mtu"`
}

// Format encodes n for the libbox.net parameter.
func (n NetSpec) Format() string {
	return fmt.Sprintf("%s,%s,%d", n.Address, n.Gateway, n.MTU)
}

// ParseNet decodes the libbox.net parameter.
func ParseNet(s string) (NetSpec, error) {
	f := strings.Split(s, ",")
	if len(f) != 3 {
		return NetSpec{}, fmt.Errorf("bootparam: bad %s %q: want ADDR/PREFIX,GATEWAY,MTU", ParamNet, s)
	}
	n := NetSpec{Address: f[0], Gateway: f[1]}
	mtu, err := strconv.Atoi(f[2])
	if err != nil || mtu < 576 || mtu > 65535 {
		return NetSpec{}, fmt.Errorf("bootparam: bad MTU %q in %s", f[2], ParamNet)
	}
	n.MTU = mtu
	return n, n.Validate()
}

// Validate checks the address and gateway.
func (n NetSpec) Validate() error {
	p, err := netip.ParsePrefix(n.Address)
	if err != nil || !p.Addr().Is4() {
		return fmt.Errorf("bootparam: bad box address %q: want IPv4/PREFIX", n.Address)
	}
	g, err := netip.ParseAddr(n.Gateway)
	if err != nil || !p.Masked().Contains(g) {
		return fmt.Errorf("bootparam: bad gateway %q for %s", n.Gateway, n.Address)
	}
	return nil
}
