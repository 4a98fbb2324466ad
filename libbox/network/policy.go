package network

import (
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libbox/libbox/errdefs"
)

// rule is one Allow or Deny entry.
type rule struct {
	text   string
	any    bool         // "*": every public name and address
	host   bool         // "host": the host's loopback as HostName
	name   string       // exact name, or the suffix of a wildcard ("pythonhosted.org")
	wild   bool         // name is "*.suffix": matches every name below suffix
	prefix netip.Prefix // IP (as a /32) or CIDR
	port   uint16       // 0: every port
}

// parseRule reads NAME, *.SUFFIX, IP, CIDR, "host" or "*", each with an
// optional ":PORT".
func parseRule(s string) (rule, error) {
	r := rule{text: s}
	body := strings.TrimSpace(strings.ToLower(s))
	if i := strings.LastIndexByte(body, ':'); i >= 0 && strings.Count(body, ":") == 1 {
		p, err := strconv.ParseUint(body[i+1:], 10, 16)
		if err != nil || p == 0 {
			return r, errdefs.New(errdefs.InvalidArgument, "network rule %q: port %q must be 1-65535", s, body[i+1:])
		}
		r.port, body = uint16(p), body[:i]
	}
	switch {
	case body == "":
		return r, errdefs.New(errdefs.InvalidArgument, "network rule %q: empty", s)
	case body == "*":
		r.any = true
	case body == "host":
		r.host = true
	case strings.Contains(body, "/"):
		p, err := netip.ParsePrefix(body)
		if err != nil {
			return r, errdefs.New(errdefs.InvalidArgument, "network rule %q: bad CIDR: %v", s, err)
		}
		if !p.Addr().Is4() {
			return r, errdefs.New(errdefs.InvalidArgument, "network rule %q: boxes have IPv4 only", s)
		}
		r.prefix = p.Masked()
	default:
		if strings.Count(body, ":") > 1 {
			return r, errdefs.New(errdefs.InvalidArgument, "network rule %q: boxes have IPv4 only", s)
		}
		if a, err := netip.ParseAddr(body); err == nil {
			r.prefix = netip.PrefixFrom(a, 32)
			break
		}
		name := body
		if strings.HasPrefix(name, "*.") {
			r.wild, name = true, name[2:]
		}
		name = strings.TrimSuffix(name, ".")
		if !validName(name) {
			return r, errdefs.New(errdefs.InvalidArgument, "network rule %q: want a name (pypi.org), a wildcard (*.pythonhosted.org), an IP, a CIDR, \"host\" or \"*\", each with an optional :PORT", s)
		}
		r.name = name
	}
	return r, nil
}

func validName(n string) bool {
	if n == "" || len(n) > 253 {
		return false
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// matchName reports whether the rule names n (lower case, no trailing dot).
func (r rule) matchName(n string) bool {
	switch {
	case r.any:
		return true
	case r.host:
		return n == HostName
	case r.name == "":
		return false
	case r.wild:
		return strings.HasSuffix(n, "."+r.name)
	default:
		return n == r.name
	}
}

func (r rule) matchPort(p uint16) bool { return r.port == 0 || r.port == p }

// special are the ranges a box never reaches unless an IP or CIDR rule of
// Allow names them: private (RFC 1918, 100.64/10), loopback, link-local
// (cloud metadata), multicast, reserved and "this network".
var special = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
		"192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

func isSpecial(a netip.Addr) bool {
	for _, p := range special {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// policy decides what a box may reach. It is immutable after newPolicy,
// except for the answers cache, which has its own lock.
type policy struct {
	allow, deny []rule
	public      bool // no Allow: the public internet
	hostAddrs   func() []netip.Addr
	special     func(netip.Addr) bool // isSpecial (tests narrow it)
	namePorts   map[uint16]bool       // ports where a connection must name an allowed host

	mu sync.Mutex
	// answers maps an address to the names it was recently the DNS answer
	// for, with the time each stops counting. Guarded by mu.
	answers map[netip.Addr]map[string]answer
}

type answer struct {
	until   time.Time
	trusted bool // from Hosts: may be a private address
}

func newPolicy(allow, deny []string, hostAddrs func() []netip.Addr) (*policy, error) {
	p := &policy{
		public: len(allow) == 0, hostAddrs: hostAddrs, special: isSpecial,
		namePorts: map[uint16]bool{80: true, 443: true}, answers: map[netip.Addr]map[string]answer{},
	}
	for _, s := range allow {
		r, err := parseRule(s)
		if err != nil {
			return nil, err
		}
		p.allow = append(p.allow, r)
	}
	for _, s := range deny {
		r, err := parseRule(s)
		if err != nil {
			return nil, err
		}
		p.deny = append(p.deny, r)
	}
	if p.public {
		p.allow = []rule{{text: "*", any: true}}
	}
	for _, r := range p.allow {
		p.public = p.public || r.any && r.port == 0
	}
	return p, nil
}

// hostAllowed reports whether the host's loopback may be reached on port
// (0: on some port).
func (p *policy) hostAllowed(port uint16) bool {
	for _, r := range p.deny {
		if r.host && (port == 0 || r.matchPort(port)) {
			return false
		}
	}
	for _, r := range p.allow {
		if r.host && (port == 0 || r.matchPort(port)) {
			return true
		}
	}
	return false
}

// nameAllowed reports whether the gateway's DNS answers n, and whether a
// connection naming n (SNI, Host) on port may pass (port 0: any port).
func (p *policy) nameAllowed(n string, port uint16) bool {
	n = strings.TrimSuffix(strings.ToLower(n), ".")
	for _, r := range p.deny {
		if r.matchName(n) && (port == 0 || r.matchPort(port)) {
			return false
		}
	}
	for _, r := range p.allow {
		if r.matchName(n) && (port == 0 || r.matchPort(port)) {
			return true
		}
	}
	return false
}

// hasDenyNames reports whether Deny lists names (so public-mode HTTP and
// TLS connections must show theirs).
func (p *policy) hasDenyNames() bool {
	for _, r := range p.deny {
		if r.name != "" {
			return true
		}
	}
	return false
}

// record notes that name answered addr until the given time.
func (p *policy) record(name string, addr netip.Addr, until time.Time, trusted bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.answers[addr]
	if m == nil {
		m = map[string]answer{}
		p.answers[addr] = m
	}
	if a, ok := m[name]; !ok || a.until.Before(until) {
		m[name] = answer{until: until, trusted: trusted || a.trusted}
	}
}

// expire drops answers past their time.
func (p *policy) expire(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, m := range p.answers {
		for n, a := range m {
			if now.After(a.until) {
				delete(m, n)
			}
		}
		if len(m) == 0 {
			delete(p.answers, addr)
		}
	}
}

// verdict is the outcome of a connection check.
type verdict int

const (
	deny     verdict = iota
	allow            // allowed by address
	needName         // allowed only if the connection names an allowed name (HTTP Host, TLS SNI)
)

// checkAddr decides a connection to dst by address. now bounds the DNS
// answers it trusts. It returns needName on ports 80 and 443 when only a
// name makes dst reachable (or when Deny lists names), and a reason when
// it denies.
func (p *policy) checkAddr(dst netip.AddrPort, now time.Time) (verdict, string) {
	a, port := dst.Addr(), dst.Port()
	for _, r := range p.deny {
		if r.prefix.IsValid() && r.prefix.Contains(a) && r.matchPort(port) {
			return deny, "denied by rule " + r.text
		}
	}
	if port == 53 || port == 853 {
		// DNS goes to the gateway; another resolver only by an explicit
		// address rule with this port.
		for _, r := range p.allow {
			if r.prefix.IsValid() && r.port == port && r.prefix.Contains(a) {
				return allow, ""
			}
		}
		return deny, "DNS to a server other than the gateway"
	}
	for _, r := range p.allow {
		if r.prefix.IsValid() && r.prefix.Contains(a) && r.matchPort(port) {
			return allow, ""
		}
	}
	own := false
	for _, h := range p.hostAddrs() {
		own = own || h == a
	}
	named := p.namedFor(a, port, now)
	if p.public && !p.special(a) && !own {
		if p.namePorts[port] && p.hasDenyNames() {
			return needName, ""
		}
		return allow, ""
	}
	if named == 0 {
		switch {
		case own:
			return deny, "the host's own address"
		case p.special(a):
			return deny, "private, loopback, link-local or multicast address"
		default:
			return deny, "not in the allow list (nor a recent DNS answer for an allowed name)"
		}
	}
	if named == 1 && (own || p.special(a)) {
		return deny, "an allowed name resolved to a private or host address (only Hosts entries may)"
	}
	if p.namePorts[port] {
		return needName, ""
	}
	return allow, ""
}

// namedFor returns 0 when no recent answer of an allowed name (on port)
// is a, 1 when only upstream answers are, 2 when a Hosts answer is.
func (p *policy) namedFor(a netip.Addr, port uint16, now time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	best := 0
	for n, ans := range p.answers[a] {
		if now.After(ans.until) || !p.nameAllowed(n, port) {
			continue
		}
		if ans.trusted {
			return 2
		}
		best = 1
	}
	return best
}

// addrRuleAllows reports whether an IP or CIDR rule of Allow (and none of
// Deny) names dst.
func (p *policy) addrRuleAllows(dst netip.AddrPort) bool {
	for _, r := range p.deny {
		if r.prefix.IsValid() && r.prefix.Contains(dst.Addr()) && r.matchPort(dst.Port()) {
			return false
		}
	}
	for _, r := range p.allow {
		if r.prefix.IsValid() && r.prefix.Contains(dst.Addr()) && r.matchPort(dst.Port()) {
			return true
		}
	}
	return p.public && !p.special(dst.Addr())
}
