package main

import (
	"strconv"
	"strings"

	"github.com/libbox/libbox/libbox"
)

// networkOptions reads --network, --allow-net, --deny-net, -p, --add-host
// and --dns (docker's -p and --add-host forms).
func (f *boxFlags) networkOptions(n *libbox.Network) error {
	n.Enabled = f.network
	if !f.network {
		if len(f.allowNet)+len(f.denyNet)+len(f.publish)+len(f.addHost)+len(f.dns) > 0 {
			return usageErr("--allow-net, --deny-net, -p, --add-host and --dns need --network")
		}
		return nil
	}
	n.Allow, n.Deny, n.DNS = f.allowNet, f.denyNet, f.dns
	for _, h := range f.addHost {
		name, ip, ok := strings.Cut(h, ":")
		if !ok || name == "" || ip == "" {
			return usageErr("--add-host %q: want NAME:IP", h)
		}
		if n.Hosts == nil {
			n.Hosts = map[string]string{}
		}
		n.Hosts[name] = ip
	}
	for _, p := range f.publish {
		m, err := parsePublish(p)
		if err != nil {
			return err
		}
		n.Ports = append(n.Ports, m)
	}
	return nil
}

// parsePublish reads [IP:]HOSTPORT:BOXPORT[/PROTO] or BOXPORT[/PROTO].
func parsePublish(s string) (libbox.PortMapping, error) {
	m := libbox.PortMapping{Protocol: "tcp"}
	spec, proto, ok := strings.Cut(s, "/")
	if ok {
		m.Protocol = proto
	}
	i := strings.LastIndexByte(spec, ':')
	boxPort := spec[i+1:]
	m.Host = "0"
	if i >= 0 {
		m.Host = spec[:i]
	}
	n, err := strconv.Atoi(boxPort)
	if err != nil {
		return m, usageErr("-p %q: want [IP:]HOSTPORT:BOXPORT[/udp] or BOXPORT", s)
	}
	m.Box = n
	return m, nil
}
