package image

import (
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/libbox/libbox/errdefs"
)

type refKind int

const (
	kindBuiltin refKind = iota
	kindRegistry
	kindLayout
	kindArchive
)

const (
	builtinRef    = "busybox"
	layoutPrefix  = "oci-layout:"
	archivePrefix = "docker-archive:"
)

// parsedRef is a reference understood: its kind, its normalized form (the
// index key and Image.Ref) and what is needed to fetch it.
type parsedRef struct {
	kind refKind
	norm string
	ref  name.Reference // kindRegistry
	path string         // kindLayout, kindArchive: absolute
	tag  string         // kindLayout: optional ref.name annotation
}

func badRef(ref, why string) error {
	return errdefs.New(errdefs.InvalidArgument,
		"invalid image reference %q: %s (write it as busybox, alpine:3.20, ghcr.io/owner/repo@sha256:..., oci-layout:/dir[:tag] or docker-archive:/file.tar)",
		ref, why)
}

// parseRef understands ref; insecure reports whether a registry host may be
// reached over plain HTTP.
func parseRef(ref string, insecure func(host string) bool) (parsedRef, error) {
	if strings.TrimSpace(ref) == "" {
		return parsedRef{}, badRef(ref, "it is empty")
	}
	if ref != strings.TrimSpace(ref) {
		return parsedRef{}, badRef(ref, "it has leading or trailing spaces")
	}
	switch ref {
	case "busybox", "busybox:latest", "builtin:busybox":
		return parsedRef{kind: kindBuiltin, norm: builtinRef}, nil
	}
	if strings.HasPrefix(ref, "builtin:") {
		return parsedRef{}, badRef(ref, "the only builtin image is builtin:busybox")
	}
	if rest, ok := strings.CutPrefix(ref, layoutPrefix); ok {
		p, tag := rest, ""
		if i := strings.LastIndex(rest, ":"); i > strings.LastIndex(rest, "/") {
			p, tag = rest[:i], rest[i+1:]
			if tag == "" {
				return parsedRef{}, badRef(ref, "the tag after ':' is empty")
			}
		}
		abs, err := absPath(ref, p)
		if err != nil {
			return parsedRef{}, err
		}
		norm := layoutPrefix + abs
		if tag != "" {
			norm += ":" + tag
		}
		return parsedRef{kind: kindLayout, norm: norm, path: abs, tag: tag}, nil
	}
	if rest, ok := strings.CutPrefix(ref, archivePrefix); ok {
		abs, err := absPath(ref, rest)
		if err != nil {
			return parsedRef{}, err
		}
		return parsedRef{kind: kindArchive, norm: archivePrefix + abs, path: abs}, nil
	}
	if strings.HasPrefix(ref, ":") || strings.HasPrefix(ref, "@") {
		return parsedRef{}, badRef(ref, "the repository name is missing")
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		why := "it is not a valid reference"
		if ref != strings.ToLower(ref) {
			why = "repository names must be lowercase"
		}
		return parsedRef{}, badRef(ref, why)
	}
	if insecure != nil && insecure(r.Context().RegistryStr()) {
		if r, err = name.ParseReference(ref, name.Insecure); err != nil {
			return parsedRef{}, badRef(ref, "it is not a valid reference")
		}
	}
	return parsedRef{kind: kindRegistry, norm: normalizeName(r), ref: r}, nil
}

func absPath(ref, p string) (string, error) {
	if p == "" {
		return "", badRef(ref, "the path is empty")
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", badRef(ref, err.Error())
	}
	return abs, nil
}

// normalizeName spells r the way Docker users read it: Docker Hub as
// docker.io, always with a tag or digest.
func normalizeName(r name.Reference) string {
	reg := r.Context().RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	repo := reg + "/" + r.Context().RepositoryStr()
	if d, ok := r.(name.Digest); ok {
		return repo + "@" + d.DigestStr()
	}
	return repo + ":" + r.Identifier()
}

// parsePlatform returns the platform to pick ("os/arch[/variant]"),
// defaulting to the host's.
func parsePlatform(p string) (v1.Platform, error) {
	if p == "" {
		return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, nil
	}
	pl, err := v1.ParsePlatform(p)
	if err != nil || pl.OS == "" || pl.Architecture == "" {
		return v1.Platform{}, errdefs.New(errdefs.InvalidArgument,
			"invalid platform %q: write it as os/arch[/variant], e.g. linux/amd64", p)
	}
	return *pl, nil
}

func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}
