package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/libbox/libbox/errdefs"
)

// imageSrc is an image about to be installed: its config and its layers,
// each readable as the bytes whose digest names it.
type imageSrc struct {
	manifest     string  // manifest digest, when the source has one
	configDigest v1.Hash // the image ID
	rawConfig    func() ([]byte, error)
	layers       []layerSrc
	origin       string // for messages: registry host or file path
}

type layerSrc struct {
	digest v1.Hash
	size   int64 // -1 when unknown
	open   opener
}

// imageSource turns a v1.Image into an imageSrc of its compressed layers.
func imageSource(img v1.Image, manifestDigest, origin string) (*imageSrc, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	src := &imageSrc{manifest: manifestDigest, configDigest: m.Config.Digest, rawConfig: img.RawConfigFile, origin: origin}
	for _, d := range m.Layers {
		d := d
		src.layers = append(src.layers, layerSrc{digest: d.Digest, size: d.Size, open: whole(func() (io.ReadCloser, error) {
			l, err := img.LayerByDigest(d.Digest)
			if err != nil {
				return nil, err
			}
			return l.Compressed()
		})})
	}
	return src, nil
}

// pickPlatform chooses the manifest for plat from an index.
func pickPlatform(im *v1.IndexManifest, plat v1.Platform, ref string) (v1.Descriptor, error) {
	var have []string
	for _, d := range im.Manifests {
		p := d.Platform
		if p == nil || p.OS == "unknown" {
			continue // attestations and the like
		}
		have = append(have, platformString(*p))
		if p.OS == plat.OS && p.Architecture == plat.Architecture && (plat.Variant == "" || p.Variant == plat.Variant) {
			return d, nil
		}
	}
	return v1.Descriptor{}, errdefs.New(errdefs.NotFound,
		"image %s has no %s variant (it has %s): pass a platform it has", ref, platformString(plat), strings.Join(have, ", "))
}

// remoteSource resolves a registry reference, trying mirrors first.
func (s *Store) remoteSource(ctx context.Context, pr parsedRef, plat v1.Platform) (*imageSrc, error) {
	origin := pr.ref.Context().RegistryStr()
	var candidates []name.Reference
	for _, m := range s.reg.mirrors[canonicalRegistry(origin)] {
		if r, err := rebase(pr.ref, m, s.reg.isInsecure(m)); err == nil {
			candidates = append(candidates, r)
		}
	}
	candidates = append(candidates, pr.ref)
	var err error
	for _, r := range candidates {
		var src *imageSrc
		src, err = s.resolveRemote(ctx, r, pr.norm, plat)
		if err == nil {
			return src, nil
		}
		if ctx.Err() != nil || !(errdefs.IsUnavailable(err) || errdefs.IsNotFound(err)) {
			return nil, err
		}
	}
	return nil, err
}

// rebase names the same repository and tag/digest on another registry.
func rebase(r name.Reference, registry string, insecure bool) (name.Reference, error) {
	sep := ":"
	if _, ok := r.(name.Digest); ok {
		sep = "@"
	}
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	return name.ParseReference(registry+"/"+r.Context().RepositoryStr()+sep+r.Identifier(), opts...)
}

func (s *Store) resolveRemote(ctx context.Context, r name.Reference, norm string, plat v1.Platform) (*imageSrc, error) {
	registry := r.Context().RegistryStr()
	opts := s.remoteOptions(ctx)
	desc, err := remote.Get(r, opts...)
	if err != nil {
		return nil, s.registryError(ctx, err, registry, norm)
	}
	var img v1.Image
	digest := desc.Digest.String()
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, s.registryError(ctx, err, registry, norm)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, s.registryError(ctx, err, registry, norm)
		}
		d, err := pickPlatform(im, plat, norm)
		if err != nil {
			return nil, err
		}
		digest = d.Digest.String()
		if img, err = idx.Image(d.Digest); err != nil {
			return nil, s.registryError(ctx, err, registry, norm)
		}
	case desc.MediaType.IsImage():
		if img, err = desc.Image(); err != nil {
			return nil, s.registryError(ctx, err, registry, norm)
		}
	default:
		return nil, errdefs.New(errdefs.Unsupported,
			"image %s has manifest type %s, which libbox cannot run: push it as an OCI or Docker v2 image", norm, desc.MediaType)
	}
	src, err := imageSource(img, digest, registry)
	if err != nil {
		return nil, s.registryError(ctx, err, registry, norm)
	}
	bf := &blobFetcher{s: s, repo: r.Context()}
	for i := range src.layers {
		src.layers[i].open = bf.opener(src.layers[i].digest, src.layers[i].size)
	}
	return src, nil
}

const refNameAnnotation = "org.opencontainers.image.ref.name"

// layoutSource reads an image from an OCI image layout directory.
func layoutSource(pr parsedRef, plat v1.Platform) (*imageSrc, error) {
	idx, err := layout.ImageIndexFromPath(pr.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errdefs.New(errdefs.NotFound, "no OCI image layout at %s: check the path (it must hold index.json and oci-layout)", pr.path)
		}
		return nil, errdefs.Wrap(errdefs.InvalidArgument, err, "%s is not a readable OCI image layout", pr.path)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, errdefs.Wrap(errdefs.InvalidArgument, err, "%s is not a readable OCI image layout", pr.path)
	}
	var chosen *v1.Descriptor
	var tags []string
	for i, d := range im.Manifests {
		t := d.Annotations[refNameAnnotation]
		if t != "" {
			tags = append(tags, t)
		}
		if pr.tag != "" && t == pr.tag || pr.tag == "" && len(im.Manifests) == 1 {
			chosen = &im.Manifests[i]
			break
		}
	}
	if chosen == nil && pr.tag == "" {
		platformed := true
		for _, d := range im.Manifests {
			platformed = platformed && d.Platform != nil
		}
		if platformed && len(im.Manifests) > 0 {
			d, err := pickPlatform(im, plat, pr.norm)
			if err != nil {
				return nil, err
			}
			chosen = &d
		}
	}
	if chosen == nil {
		if pr.tag == "" {
			return nil, errdefs.New(errdefs.InvalidArgument,
				"OCI layout %s holds %d images: name one as oci-layout:%s:TAG (tags: %s)", pr.path, len(im.Manifests), pr.path, strings.Join(tags, ", "))
		}
		return nil, errdefs.New(errdefs.NotFound, "OCI layout %s has no image tagged %q (tags: %s)", pr.path, pr.tag, strings.Join(tags, ", "))
	}
	var img v1.Image
	digest := chosen.Digest
	if chosen.MediaType.IsIndex() {
		child, err := idx.ImageIndex(chosen.Digest)
		if err == nil {
			var cim *v1.IndexManifest
			if cim, err = child.IndexManifest(); err == nil {
				var d v1.Descriptor
				if d, err = pickPlatform(cim, plat, pr.norm); err != nil {
					return nil, err
				}
				digest = d.Digest
				img, err = child.Image(d.Digest)
			}
		}
		if err != nil {
			return nil, errdefs.Wrap(errdefs.InvalidArgument, err, "OCI layout %s: read index %s", pr.path, chosen.Digest)
		}
	} else if img, err = idx.Image(chosen.Digest); err != nil {
		return nil, errdefs.Wrap(errdefs.InvalidArgument, err, "OCI layout %s: read image %s", pr.path, chosen.Digest)
	}
	src, err := imageSource(img, digest.String(), pr.path)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.InvalidArgument, err, "OCI layout %s: read manifest %s", pr.path, digest)
	}
	return src, nil
}

// archiveSource reads the single image of a `docker save` archive. Its
// layers are cached uncompressed, named by their diff IDs.
func archiveSource(pr parsedRef) (*imageSrc, error) {
	img, err := tarball.ImageFromPath(pr.path, nil)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errdefs.New(errdefs.NotFound, "no docker archive at %s: check the path", pr.path)
		}
		return nil, errdefs.Wrap(errdefs.InvalidArgument, err,
			"%s is not a single-image docker archive (the output of docker save IMAGE)", pr.path)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return nil, errdefs.Wrap(errdefs.InvalidArgument, err, "docker archive %s: read config", pr.path)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, errdefs.Wrap(errdefs.InvalidArgument, err, "docker archive %s: read config", pr.path)
	}
	src := &imageSrc{configDigest: cfgName, rawConfig: img.RawConfigFile, origin: pr.path}
	for _, diffID := range cf.RootFS.DiffIDs {
		diffID := diffID
		src.layers = append(src.layers, layerSrc{digest: diffID, size: -1, open: whole(func() (io.ReadCloser, error) {
			l, err := img.LayerByDiffID(diffID)
			if err != nil {
				return nil, fmt.Errorf("docker archive %s: %w", pr.path, err)
			}
			return l.Uncompressed()
		})})
	}
	return src, nil
}
