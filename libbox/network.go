package libbox

import (
	"bytes"
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

// startNetwork builds the box's network and the link its backend attaches.
func (b *Box) startNetwork(spec *backend.Spec) (*network.Network, error) {
	if !b.cfg.Network.Enabled {
		return nil, nil
	}
	cfg := b.cfg.Network.config()
	cfg.Logf = b.rt.logf
	n, err := network.New(cfg)
	if err != nil {
		return nil, err
	}
	spec.Network = true
	spec.NetLink = &backend.NetworkLink{
		Address: netip.PrefixFrom(network.BoxIP, network.Subnet.Bits()),
		Gateway: network.GatewayIP, MAC: network.BoxMAC, MTU: n.Info().MTU,
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

func (b *Box) runningNetwork() (*network.Network, error) {
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
func closeNetwork(n *network.Network) {
	if n != nil {
		n.Close()
	}
}
