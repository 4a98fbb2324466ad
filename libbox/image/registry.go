package image

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/libbox/libbox/errdefs"
)

// Registries configure registry access. libbox.Open fills them from
// LIBBOX_REGISTRY_AUTH, LIBBOX_INSECURE_REGISTRIES and LIBBOX_REGISTRY_MIRRORS
// (ParseRegistries); this package never reads the environment.
type Registries struct {
	// Auth maps a registry host (docker.io, ghcr.io, host:port) to its
	// credentials; registries not listed use the Docker config, else none.
	Auth map[string]Credential
	// Insecure lists the hosts (host[:port], or a bare host for every
	// port) that may be reached over plain HTTP or unverified TLS.
	Insecure []string
	// Mirrors maps a registry to mirror hosts (host[:port]), tried in
	// order before it.
	Mirrors map[string][]string
}

// Credential is a registry user name and password.
type Credential struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// registryConfig is Registries in canonical form (set once, by Open).
type registryConfig struct {
	insecure map[string]bool             // canonical host[:port] or bare host
	auth     map[string]authn.AuthConfig // canonical registry -> credentials
	mirrors  map[string][]string         // canonical registry -> mirror hosts, in order
}

// canonicalRegistry spells a registry host the way go-containerregistry
// does (Docker Hub as index.docker.io), lowercased.
func canonicalRegistry(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	h = strings.TrimPrefix(strings.TrimPrefix(h, "https://"), "http://")
	h = strings.TrimSuffix(h, "/")
	switch h {
	case "docker.io", "registry-1.docker.io", "index.docker.io", "registry.hub.docker.com":
		return name.DefaultRegistry
	}
	return h
}

func splitList(v string) []string {
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// ParseRegistries reads registry settings written as the LIBBOX_*
// variables write them: auth "registry=user:password[,...]", insecure
// "host[:port][,...]", mirrors "registry=host[:port][,...]" (a registry may
// be named more than once). Empty strings give nil parts.
func ParseRegistries(auth, insecure, mirrors string) (Registries, error) {
	var r Registries
	r.Insecure = splitList(insecure)
	for i, e := range splitList(auth) {
		reg, cred, ok := strings.Cut(e, "=")
		user, pass, ok2 := strings.Cut(cred, ":")
		if !ok || !ok2 || reg == "" || user == "" {
			// Never echo the entry: a malformed one may be a bare secret.
			return r, errdefs.New(errdefs.InvalidArgument,
				"LIBBOX_REGISTRY_AUTH: entry %d is malformed: write registry=user:password[,registry=user:password...]", i+1)
		}
		if r.Auth == nil {
			r.Auth = map[string]Credential{}
		}
		r.Auth[reg] = Credential{Username: user, Password: pass}
	}
	for _, e := range splitList(mirrors) {
		reg, mirror, ok := strings.Cut(e, "=")
		if !ok || reg == "" || mirror == "" {
			return r, errdefs.New(errdefs.InvalidArgument,
				"LIBBOX_REGISTRY_MIRRORS: entry %q is malformed: write registry=host[:port][,...], e.g. docker.io=mirror.local:5000", e)
		}
		if r.Mirrors == nil {
			r.Mirrors = map[string][]string{}
		}
		r.Mirrors[reg] = append(r.Mirrors[reg], mirror)
	}
	return r, nil
}

// newRegistryConfig checks r and puts it in canonical form.
func newRegistryConfig(r Registries) (registryConfig, error) {
	c := registryConfig{insecure: map[string]bool{}, auth: map[string]authn.AuthConfig{}, mirrors: map[string][]string{}}
	for _, h := range r.Insecure {
		if h = canonicalRegistry(h); h == "" || strings.Contains(h, "/") {
			return c, errdefs.New(errdefs.InvalidArgument, "insecure registry %q (LIBBOX_INSECURE_REGISTRIES): want host[:port]", h)
		}
		c.insecure[h] = true
	}
	for reg, cred := range r.Auth {
		if canonicalRegistry(reg) == "" || cred.Username == "" {
			return c, errdefs.New(errdefs.InvalidArgument,
				"registry credentials for %q (LIBBOX_REGISTRY_AUTH): want a registry host and a user name", reg)
		}
		c.auth[canonicalRegistry(reg)] = authn.AuthConfig{Username: cred.Username, Password: cred.Password}
	}
	for reg, ms := range r.Mirrors {
		for _, m := range ms {
			mirror := canonicalRegistry(m)
			if canonicalRegistry(reg) == "" || mirror == "" || strings.Contains(mirror, "/") {
				return c, errdefs.New(errdefs.InvalidArgument,
					"registry mirror %q for %q (LIBBOX_REGISTRY_MIRRORS) is malformed: write registry=host[:port][,...], e.g. docker.io=mirror.local:5000", m, reg)
			}
			c.mirrors[canonicalRegistry(reg)] = append(c.mirrors[canonicalRegistry(reg)], mirror)
		}
	}
	return c, nil
}

// isInsecure reports whether host (host[:port]) may be reached over plain
// HTTP: it, or its bare host name, is listed in LIBBOX_INSECURE_REGISTRIES.
func (c registryConfig) isInsecure(host string) bool {
	host = canonicalRegistry(host)
	if c.insecure[host] {
		return true
	}
	if h, _, err := net.SplitHostPort(host); err == nil && c.insecure[h] {
		return true
	}
	return false
}

// Resolve implements authn.Keychain over LIBBOX_REGISTRY_AUTH.
func (c registryConfig) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if a, ok := c.auth[canonicalRegistry(r.RegistryStr())]; ok {
		return authn.FromConfig(a), nil
	}
	return authn.Anonymous, nil
}

// errPlainHTTP refuses plain HTTP to a registry not listed as insecure.
type errPlainHTTP struct{ host string }

func (e *errPlainHTTP) Error() string {
	return fmt.Sprintf("registry %s speaks plain HTTP: add it to LIBBOX_INSECURE_REGISTRIES if you trust it", e.host)
}

// strictTransport sends plain HTTP only to insecure-listed hosts and skips
// TLS verification only for them.
type strictTransport struct {
	cfg      registryConfig
	secure   *http.Transport
	insecure *http.Transport
}

func newStrictTransport(cfg registryConfig) *strictTransport {
	base := remote.DefaultTransport.(*http.Transport)
	t := &strictTransport{cfg: cfg, secure: base.Clone(), insecure: base.Clone()}
	t.insecure.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // only for hosts the user listed
	return t
}

func (t *strictTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	listed := t.cfg.isInsecure(req.URL.Host)
	if req.URL.Scheme == "http" && !listed {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, &errPlainHTTP{host: req.URL.Host}
	}
	if listed {
		return t.insecure.RoundTrip(req)
	}
	return t.secure.RoundTrip(req)
}

func (t *strictTransport) close() {
	t.secure.CloseIdleConnections()
	t.insecure.CloseIdleConnections()
}

// keychain finds credentials: LIBBOX_REGISTRY_AUTH first, then the Docker
// config and its credential helpers.
func (s *Store) keychain() authn.Keychain {
	return authn.NewMultiKeychain(s.reg, authn.DefaultKeychain)
}

func (s *Store) remoteOptions(ctx context.Context) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(s.transport),
		remote.WithAuthFromKeychain(s.keychain()),
		remote.WithRetryBackoff(remote.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 3}),
		remote.WithUserAgent("libbox"),
	}
}

// credentials says whose credentials libbox sends to registry, and where
// they come from ("" when it pulls anonymously). Never the password.
func (s *Store) credentials(ctx context.Context, registry string) (user, from string) {
	reg, err := name.NewRegistry(registry)
	if err != nil {
		return "", ""
	}
	if a, ok := s.reg.auth[canonicalRegistry(registry)]; ok {
		return a.Username, "LIBBOX_REGISTRY_AUTH"
	}
	auth, err := authn.Resolve(ctx, authn.DefaultKeychain, reg)
	if err != nil || auth == authn.Anonymous {
		return "", ""
	}
	cfg, err := authn.Authorization(ctx, auth)
	if err != nil || cfg == nil || cfg.Username == "" && cfg.IdentityToken == "" && cfg.RegistryToken == "" {
		return "", ""
	}
	user = cfg.Username
	if user == "" {
		user = "(token)"
	}
	return user, "the Docker config"
}

// authError says why registry refused ref: no credentials sent, the
// credentials were rejected, or the user may not pull it.
func (s *Store) authError(ctx context.Context, registry, ref string, status int) error {
	user, from := s.credentials(ctx, registry)
	switch {
	case user == "":
		return errdefs.New(errdefs.NotFound,
			"registry %s refused anonymous access to %s: the image does not exist, or it needs credentials (docker login %s, or LIBBOX_REGISTRY_AUTH=%s=user:password)",
			registry, ref, registry, registry)
	case status == http.StatusForbidden:
		return errdefs.New(errdefs.FailedPrecondition,
			"registry %s denies user %q (from %s) access to %s: check the name, or ask for pull access", registry, user, from, ref)
	}
	return errdefs.New(errdefs.FailedPrecondition,
		"registry %s rejected the credentials of user %q (from %s) pulling %s: check the user name and password", registry, user, from, ref)
}

// certError returns the error of a TLS certificate the client does not
// trust found in err, or nil.
func certError(err error) error {
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	var hne x509.HostnameError
	var cie x509.CertificateInvalidError
	switch {
	case errors.As(err, &cve):
		return cve
	case errors.As(err, &uae):
		return uae
	case errors.As(err, &hne):
		return hne
	case errors.As(err, &cie):
		return cie
	}
	return nil
}

func isCertError(err error) bool { return certError(err) != nil }

// registryError classifies an error from talking to registry about ref.
func (s *Store) registryError(ctx context.Context, err error, registry, ref string) error {
	if registry == name.DefaultRegistry {
		registry = "docker.io"
	}
	if ctx.Err() != nil {
		return fmt.Errorf("pull %s: %w", ref, ctx.Err())
	}
	var te *transport.Error
	if errors.As(err, &te) {
		for _, d := range te.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
				return errdefs.New(errdefs.NotFound, "image %s not found in registry %s: check the name and tag", ref, registry)
			case transport.UnauthorizedErrorCode:
				return s.authError(ctx, registry, ref, http.StatusUnauthorized)
			case transport.DeniedErrorCode:
				return s.authError(ctx, registry, ref, http.StatusForbidden)
			case transport.TooManyRequestsErrorCode:
				return errdefs.New(errdefs.Unavailable, "registry %s rate-limits pulls of %s: retry later, log in, or set LIBBOX_REGISTRY_MIRRORS", registry, ref)
			}
		}
		switch {
		case te.StatusCode == http.StatusNotFound:
			return errdefs.New(errdefs.NotFound, "image %s not found in registry %s: check the name and tag", ref, registry)
		case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden:
			return s.authError(ctx, registry, ref, te.StatusCode)
		case te.StatusCode == http.StatusTooManyRequests || te.StatusCode >= 500:
			return errdefs.Wrap(errdefs.Unavailable, scrub(err), "registry %s failed serving %s: retry later", registry, ref)
		}
		return errdefs.Wrap(errdefs.Internal, scrub(err), "pull %s from registry %s", ref, registry)
	}
	var ne net.Error
	var ue *url.Error
	var oe *net.OpError
	var plain *errPlainHTTP
	unreachable := func() error {
		return errdefs.Wrap(errdefs.Unavailable, scrub(err),
			"registry %s is unreachable (pulling %s): check the network, or set LIBBOX_REGISTRY_MIRRORS", registry, ref)
	}
	// Order matters: trying HTTPS and then HTTP gives both errors at once,
	// and the HTTPS one says what really happened.
	switch {
	case errors.As(err, &oe) && oe.Op == "dial":
		return unreachable()
	case isCertError(err):
		return errdefs.Wrap(errdefs.Unavailable, certError(err),
			"registry %s has a TLS certificate this machine does not trust (pulling %s): install its CA certificate, or add it to LIBBOX_INSECURE_REGISTRIES", registry, ref)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return errdefs.New(errdefs.Unavailable,
			"registry %s speaks plain HTTP, not HTTPS (pulling %s): add it to LIBBOX_INSECURE_REGISTRIES if you trust it", registry, ref)
	case errors.As(err, &plain):
		return errdefs.Wrap(errdefs.Unavailable, plain, "pull %s", ref)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return errdefs.Wrap(errdefs.Unavailable, scrub(err),
			"registry %s dropped the connection (pulling %s): pull again", registry, ref)
	case errors.As(err, &oe), errors.As(err, &ne), errors.As(err, &ue),
		strings.Contains(err.Error(), "connection refused"), strings.Contains(err.Error(), "no such host"):
		return unreachable()
	}
	return errdefs.Wrap(errdefs.Internal, scrub(err), "pull %s from registry %s", ref, registry)
}
