package libbox

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"runtime"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/network"
)

// Network is a box's network: off by default (loopback only). On, the box
// gets one interface behind a user-mode network that lives on the host and
// enforces the policy there (see the README, "Network").
type Network struct {
	Enabled bool `json:"enabled"`
	// Allow: empty means the public internet; otherwise only what it lists:
	// names (pypi.org), wildcards (*.pythonhosted.org), IPs, CIDRs, "host"
	// (the host's loopback as host.libbox.internal) or "*" (the public
	// internet), each with an optional :PORT.
	Allow []string `json:"allow,omitempty"`
	// Deny wins over Allow (same entries).
	Deny []string `json:"deny,omitempty"`
	// Ports are published on the host when the box starts.
	Ports []PortMapping `json:"ports,omitempty"`
	// Hosts are names the box's DNS answers (NAME → IPv4), like --add-host.
	Hosts map[string]string `json:"hosts,omitempty"`
	// DNS are the upstream resolvers (default: the host's).
	DNS []string `json:"dns,omitempty"`
}

// PortMapping publishes a box port on the host (Host "IP:PORT", ":PORT" or
// "PORT", on 127.0.0.1 unless an IP is given; port 0 picks a free one).
type PortMapping = network.PortMapping

// NetworkInfo describes a running box's network.
type NetworkInfo = network.Info

// UnmarshalJSON accepts true, false, null or an object (which enables the
// network unless it says "enabled": false).
func (n *Network) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch string(b) {
	case "null", "false":
		*n = Network{}
		return nil
	case "true":
		*n = Network{Enabled: true}
		return nil
	}
	type plain Network
	v := plain{Enabled: true}
	if err := json.Unmarshal(b, &v); err != nil {
		return errdefs.Wrap(errdefs.InvalidArgument, err, "network: want true, false or an object")
	}
	*n = Network(v)
	return nil
}

func (n Network) config() network.Config {
	return network.Config{Allow: n.Allow, Deny: n.Deny, Hosts: n.Hosts, DNS: n.DNS, Ports: n.Ports}
}

// validateNetwork checks a box's network settings.
func validateNetwork(n Network, isolation string) error {
	if !n.Enabled {
		if len(n.Allow)+len(n.Deny)+len(n.Ports)+len(n.Hosts)+len(n.DNS) > 0 {
			return errdefs.New(errdefs.InvalidArgument, "network: allow, deny, ports, hosts or dns given with the network off (set network.enabled)")
		}
		return nil
	}
	if isolation == IsolationVM && runtime.GOOS != "linux" {
		return errdefs.New(errdefs.Unsupported, "network: %s vm boxes have no network yet (use isolation \"sandbox\" or turn the network off)", runtime.GOOS)
	}
	return network.Check(n.config())
}

// boxMTU is the MTU of a box's link (a sandbox's tap, a VM's socket pair
// to QEMU's virtio-net): a frame never leaves the host, so a large one cuts
// the per-frame cost of bulk transfers (a syscall and a pass through each
// side's stack; in a VM also the emulated device's work per frame, and a
// TCG guest pays dearly per frame: 100 MB in 64 KB frames instead of 1.5
// KB ones took a third of the host CPU, at two to three times the rate).
const boxMTU = 65000

// boxNetwork is a running box's network: in this process
// (*network.Network) or, for a detached box, in its helper process
// (*network.Helper), which outlives this one.
type boxNetwork interface {
	Publish(PortMapping) (PortMapping, error)
	Unpublish(PortMapping) error
	Info() network.Info
	Close() error
	Attach(*os.File, network.Framing) error
}

// startNetwork builds the box's network and the link its backend attaches:
// in this process, or in a helper process when the box is detached (its
// network must outlive this process).
func (b *Box) startNetwork(ctx context.Context, spec *backend.Spec) (boxNetwork, error) {
	if !b.cfg.Network.Enabled {
		return nil, nil
	}
	cfg := b.cfg.Network.config()
	cfg.Logf = b.rt.logf
	cfg.MTU = boxMTU
	var n boxNetwork
	if b.cfg.Detach {
		bin, err := b.rt.netd()
		if err != nil {
			return nil, err
		}
		if n, err = network.StartHelper(ctx, bin, b.dir, cfg); err != nil {
			return nil, err
		}
	} else {
		nw, err := network.New(cfg)
		if err != nil {
			return nil, err
		}
		n = nw
	}
	spec.Network = true
	spec.NetLink = &backend.NetworkLink{
		Address: netip.PrefixFrom(network.BoxIP, network.Subnet.Bits()),
		Gateway: network.GatewayIP, MAC: network.BoxMAC, MTU: max(cfg.MTU, network.DefaultMTU),
		Attach: func(f *os.File, stream bool) error {
			framing := network.FramePerRead
			if stream {
				framing = network.FrameLength32
			}
			return n.Attach(f, framing)
		},
	}
	return n, nil
}

// followNetwork returns the network of a detached box this process
// reattached to (nil when it has none, or its helper is gone).
func (b *Box) followNetwork() boxNetwork {
	if !b.cfg.Network.Enabled || !b.cfg.Detach {
		return nil
	}
	h, err := network.DialHelper(b.dir)
	if err != nil {
		b.rt.logf("libbox: box %s: its network is gone: %v", b.cfg.ID, err)
		return nil
	}
	return h
}

// Publish publishes a port of the running box on the host and returns it
// with the host address bound (port 0 replaced by the one picked).
func (b *Box) Publish(m PortMapping) (PortMapping, error) {
	n, err := b.runningNetwork()
	if err != nil {
		return m, err
	}
	return n.Publish(m)
}

// Unpublish stops publishing a port, named by its host address (as box
// info shows it) or, with Host empty, by its box port.
func (b *Box) Unpublish(m PortMapping) error {
	n, err := b.runningNetwork()
	if err != nil {
		return err
	}
	return n.Unpublish(m)
}

func (b *Box) runningNetwork() (boxNetwork, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.cfg.Network.Enabled {
		return nil, errdefs.New(errdefs.FailedPrecondition, "box %s has no network (create it with the network on)", b.cfg.ID)
	}
	if b.net == nil {
		return nil, errdefs.New(errdefs.FailedPrecondition, "box %s is not running in this process", b.cfg.ID)
	}
	return b.net, nil
}

// closeNetwork closes n (nil: nothing).
func closeNetwork(n boxNetwork) {
	if n != nil {
		n.Close()
	}
}
