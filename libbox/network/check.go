package network

// Check validates a configuration without building anything: the rules,
// hosts, resolvers and ports, with the errors New would return.
func Check(cfg Config) error {
	if _, err := newPolicy(cfg.Allow, cfg.Deny, HostAddrs); err != nil {
		return err
	}
	if _, err := parseHosts(cfg.Hosts); err != nil {
		return err
	}
	if len(cfg.DNS) > 0 {
		if _, err := upstreams(cfg.DNS); err != nil {
			return err
		}
	}
	for _, p := range cfg.Ports {
		if _, _, err := p.normalize(); err != nil {
			return err
		}
	}
	return nil
}
