package image

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/libbox/libbox/errdefs"
)

// registryConfig is what the environment says about registries (read once,
// by Open).
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

func loadRegistryConfig() (registryConfig, error) {
	c := registryConfig{insecure: map[string]bool{}, auth: map[string]authn.AuthConfig{}, mirrors: map[string][]string{}}
	for _, h := range splitList(os.Getenv("LIBBOX_INSECURE_REGISTRIES")) {
		c.insecure[canonicalRegistry(h)] = true
	}
	for _, e := range splitList(os.Getenv("LIBBOX_REGISTRY_AUTH")) {
		reg, cred, ok := strings.Cut(e, "=")
		user, pass, ok2 := strings.Cut(cred, ":")
		if !ok || !ok2 || reg == "" || user == "" {
			return c, errdefs.New(errdefs.InvalidArgument,
				"LIBBOX_REGISTRY_AUTH: entry for %q is malformed: write registry=user:password[,registry=user:password...]", reg)
		}
		c.auth[canonicalRegistry(reg)] = authn.AuthConfig{Username: user, Password: pass}
	}
	for _, e := range splitList(os.Getenv("LIBBOX_REGISTRY_MIRRORS")) {
		reg, mirror, ok := strings.Cut(e, "=")
		mirror = canonicalRegistry(mirror)
		if !ok || reg == "" || mirror == "" || strings.Contains(mirror, "/") {
			return c, errdefs.New(errdefs.InvalidArgument,
				"LIBBOX_REGISTRY_MIRRORS: entry %q is malformed: write registry=host[:port][,...], e.g. docker.io=mirror.local:5000", e)
		}
		r := canonicalRegistry(reg)
		c.mirrors[r] = append(c.mirrors[r], mirror)
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

func (s *Store) remoteOptions(ctx context.Context) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(s.transport),
		remote.WithAuthFromKeychain(authn.NewMultiKeychain(s.reg, authn.DefaultKeychain)),
		remote.WithRetryBackoff(remote.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 3}),
		remote.WithUserAgent("libbox"),
	}
}

// registryError classifies an error from talking to registry about ref.
func registryError(ctx context.Context, err error, registry, ref string) error {
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
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return errdefs.New(errdefs.NotFound,
					"image %s not found in registry %s, or access denied: check the name, or log in (docker login %s, or LIBBOX_REGISTRY_AUTH=%s=user:password)",
					ref, registry, registry, registry)
			case transport.TooManyRequestsErrorCode:
				return errdefs.New(errdefs.Unavailable, "registry %s rate-limits pulls of %s: retry later, log in, or set LIBBOX_REGISTRY_MIRRORS", registry, ref)
			}
		}
		switch {
		case te.StatusCode == http.StatusNotFound:
			return errdefs.New(errdefs.NotFound, "image %s not found in registry %s: check the name and tag", ref, registry)
		case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden:
			return errdefs.New(errdefs.NotFound,
				"image %s not found in registry %s, or access denied: check the name, or log in (docker login %s, or LIBBOX_REGISTRY_AUTH=%s=user:password)",
				ref, registry, registry, registry)
		case te.StatusCode == http.StatusTooManyRequests || te.StatusCode >= 500:
			return errdefs.Wrap(errdefs.Unavailable, err, "registry %s failed serving %s: retry later", registry, ref)
		}
		return errdefs.Wrap(errdefs.Internal, err, "pull %s from registry %s", ref, registry)
	}
	var ne net.Error
	var ue *url.Error
	var oe *net.OpError
	var cve *tls.CertificateVerificationError
	var plain *errPlainHTTP
	unreachable := func() error {
		return errdefs.Wrap(errdefs.Unavailable, err,
			"registry %s is unreachable (pulling %s): check the network, or set LIBBOX_REGISTRY_MIRRORS", registry, ref)
	}
	switch {
	case errors.As(err, &oe) && oe.Op == "dial":
		return unreachable()
	case errors.As(err, &plain):
		return errdefs.Wrap(errdefs.Unavailable, plain, "pull %s", ref)
	case errors.As(err, &cve):
		return errdefs.Wrap(errdefs.Unavailable, err,
			"registry %s has an untrusted TLS certificate (pulling %s): install its CA, or add it to LIBBOX_INSECURE_REGISTRIES", registry, ref)
	case errors.As(err, &oe), errors.As(err, &ne), errors.As(err, &ue),
		strings.Contains(err.Error(), "connection refused"), strings.Contains(err.Error(), "no such host"):
		return unreachable()
	}
	return errdefs.Wrap(errdefs.Internal, err, "pull %s from registry %s", ref, registry)
}
