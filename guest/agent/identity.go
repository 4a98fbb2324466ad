package agent

import (
	"context"
	"sync"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/agentpb"
)

// minSeed is the fewest random bytes Identify accepts: a restored box must
// not share the template's random state.
const minSeed = 32

// identity is what makes a box restored from a memory snapshot distinct
// from its template and its siblings, as the host last set it.
type identity struct {
	mu sync.Mutex
	// host and box are the hostname and box id Identify set ("" before);
	// guarded by mu.
	host, box string
}

// hostname is the hostname Identify set, else def (the boot's).
func (id *identity) hostname(def string) string {
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.host != "" {
		return id.host
	}
	return def
}

func (id *identity) boxID() string {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.box
}

// Identify applies a fresh identity: the random seed first (nothing the
// box does afterwards may draw from the template's pool), then the clock,
// then the hostname and box id. It only runs as PID 1 of a VM, where the
// kernel is the box's own.
func (a *Agent) Identify(ctx context.Context, req *agentpb.IdentifyRequest) (*agentpb.IdentifyResponse, error) {
	if len(req.GetSeed()) < minSeed {
		return nil, errdefs.New(errdefs.InvalidArgument, "identify: seed of %d bytes: send at least %d random bytes", len(req.GetSeed()), minSeed)
	}
	if req.GetUnixNanos() <= 0 {
		return nil, errdefs.New(errdefs.InvalidArgument, "identify: clock %d: send the host's wall clock in unix nanoseconds", req.GetUnixNanos())
	}
	if err := validHostname(req.GetHostname()); err != nil {
		return nil, err
	}
	if !a.opts.OwnKernel {
		return nil, errdefs.New(errdefs.FailedPrecondition, "identify: only the agent of a VM box (PID 1 of its own kernel) sets the machine's identity")
	}
	if err := reseedRandom(req.GetSeed()); err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "identify: random seed")
	}
	before := time.Now()
	if err := setClock(time.Unix(0, req.GetUnixNanos())); err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "identify: clock")
	}
	if h := req.GetHostname(); h != "" {
		if err := setHostname(h); err != nil {
			return nil, errdefs.Wrap(errdefs.Internal, err, "identify: hostname")
		}
	}
	a.ident.mu.Lock()
	if h := req.GetHostname(); h != "" {
		a.ident.host = h
	}
	a.ident.box = req.GetBoxId()
	a.ident.mu.Unlock()
	return &agentpb.IdentifyResponse{ClockStepNanos: req.GetUnixNanos() - before.UnixNano()}, nil
}

// validHostname accepts "" (keep the current one) or what sethostname and
// resolvers take: up to 64 letters, digits, '-' and '.'.
func validHostname(h string) error {
	if len(h) > 64 {
		return errdefs.New(errdefs.InvalidArgument, "identify: hostname %q is longer than 64 bytes", h)
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return errdefs.New(errdefs.InvalidArgument, "identify: hostname %q: use letters, digits, '-' and '.'", h)
		}
	}
	return nil
}
