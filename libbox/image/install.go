package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/libbox/libbox/errdefs"
)

// builtinDir holds the builtin image's tarball that build.sh makes (and a
// README, so the pattern always matches: a fresh clone builds and vets).
//
//go:embed builtin
var builtinDir embed.FS

// builtinTar is the builtin image's tarball, nil in a build without it.
var builtinTar, _ = builtinDir.ReadFile("builtin/busybox.tar.gz")

// builtinID is the ID of the builtin image: the digest of its tarball.
var builtinID = sync.OnceValue(func() string {
	sum := sha256.Sum256(builtinTar)
	return "sha256:" + hex.EncodeToString(sum[:])
})

var builtinConfig = Config{
	Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	WorkingDir: "/",
	Cmd:        []string{"sh"},
}

// maxParallelLayers bounds concurrent layer downloads of one image.
const maxParallelLayers = 3

// lockInstall holds the gc lock shared for an install, so Remove does not
// collect blobs or roots an install is about to record.
func (s *Store) lockInstall() (func(), error) {
	unlock, err := lockFile(s.gcLockPath(), false, true)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "lock image store %s", s.dir)
	}
	return unlock, nil
}

func (s *Store) installBuiltin(ctx context.Context, norm, plat string) (*record, error) {
	unlock, err := s.lockInstall()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if len(builtinTar) == 0 {
		return nil, errdefs.New(errdefs.FailedPrecondition, "this build has no builtin busybox image: build with ./build.sh build")
	}
	id := builtinID()
	if err := s.ensureRoot(ctx, id, func(u *unpacker) error {
		zr, err := decompress(bytes.NewReader(builtinTar))
		if err != nil {
			return errdefs.Wrap(errdefs.Internal, err, "builtin busybox image is corrupted: rebuild with ./build.sh build")
		}
		defer zr.Close()
		return u.apply(ctx, zr, "builtin:busybox")
	}); err != nil {
		return nil, err
	}
	return s.record(record{Ref: norm, Platform: plat, ID: id, Config: builtinConfig})
}

// install stores src under norm/plat: config and layers into the blob cache
// (skipping cached ones), then one unpacked root per image ID. With want
// (a platform the caller asked for), an image made for another platform is
// refused, as docker pull --platform does.
func (s *Store) install(ctx context.Context, norm, plat string, want *v1.Platform, src *imageSrc, report func(Progress)) (*record, error) {
	unlock, err := s.lockInstall()
	if err != nil {
		return nil, err
	}
	defer unlock()
	id := src.configDigest.String()
	cfgPath, err := s.ensureBlob(ctx, src.configDigest, -1, whole(func() (io.ReadCloser, error) {
		b, err := src.rawConfig()
		if err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}), nil, src.origin)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "read config %s", id)
	}
	var cf v1.ConfigFile
	if err := json.Unmarshal(raw, &cf); err != nil {
		return nil, errdefs.Wrap(errdefs.InvalidArgument, err, "image %s: config %s is not an image config", norm, id)
	}
	if want != nil && cf.OS != "" && cf.Architecture != "" &&
		(cf.OS != want.OS || cf.Architecture != want.Architecture || want.Variant != "" && cf.Variant != want.Variant) {
		got := platformString(v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant})
		return nil, errdefs.New(errdefs.NotFound,
			"image %s is made for %s, not %s: pass a platform it has (or none)", norm, got, platformString(*want))
	}
	rec := record{Ref: norm, Platform: plat, ID: id, Manifest: src.manifest, Config: Config{
		Env: cf.Config.Env, WorkingDir: cf.Config.WorkingDir, User: cf.Config.User,
		Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd,
	}}
	for _, l := range src.layers {
		rec.Layers = append(rec.Layers, l.digest.String())
	}
	if _, err := os.Stat(s.rootPath(id)); err == nil {
		return s.record(rec) // unpacked already (same image under another name, or a re-pull)
	}

	paths, err := s.fetchLayers(ctx, src, report)
	if err != nil {
		return nil, err
	}
	if err := s.ensureRoot(ctx, id, func(u *unpacker) error {
		for i, p := range paths {
			if err := applyBlob(ctx, u, p, src.layers[i].digest.String()); err != nil {
				return err
			}
		}
		// Docker and podman create a WorkingDir the image lacks.
		if err := u.mkdirIn(rec.Config.WorkingDir); err != nil {
			return errdefs.Wrap(errdefs.InvalidArgument, err,
				"image %s: its working directory %q cannot be created", norm, rec.Config.WorkingDir)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return s.record(rec)
}

// fetchLayers makes sure every layer blob is cached, a few at a time, and
// returns their paths in order.
func (s *Store) fetchLayers(ctx context.Context, src *imageSrc, report func(Progress)) ([]string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	paths := make([]string, len(src.layers))
	errs := make([]error, len(src.layers))
	sem := make(chan struct{}, maxParallelLayers)
	var wg sync.WaitGroup
	for i, l := range src.layers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			paths[i], errs[i] = s.ensureBlob(ctx, l.digest, l.size, l.open, report, src.origin)
			if errs[i] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	// Report the first real failure rather than the cancellations it caused.
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return nil, err
		}
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return paths, nil
}

func applyBlob(ctx context.Context, u *unpacker, path, digest string) error {
	f, err := os.Open(path)
	if err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "open layer %s", digest)
	}
	defer f.Close()
	zr, err := decompress(f)
	if err != nil {
		return errdefs.Wrap(errdefs.InvalidArgument, err, "layer %s is not a readable tar (gzip, zstd or plain)", digest)
	}
	defer zr.Close()
	return u.apply(ctx, zr, digest)
}

// ensureRoot unpacks the root of image id unless present: into a temp dir
// first, renamed into place only when complete.
func (s *Store) ensureRoot(ctx context.Context, id string, fill func(*unpacker) error) error {
	final := s.rootPath(id)
	if _, err := os.Stat(final); err == nil {
		return nil
	}
	work, err := os.MkdirTemp(s.tmpDir(), "root-")
	if err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "create temp dir in %s", s.tmpDir())
	}
	defer removeTree(work)
	rootfs := filepath.Join(work, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "create temp root")
	}
	u, err := newUnpacker(rootfs)
	if err != nil {
		return err
	}
	err = fill(u)
	if err == nil {
		err = u.finish()
	}
	u.close()
	if err != nil {
		return err
	}
	if err := os.Rename(rootfs, final); err != nil {
		if _, serr := os.Stat(final); serr == nil {
			return nil // someone else finished the same image first
		}
		return errdefs.Wrap(errdefs.Internal, err, "store image root %s", id)
	}
	return nil
}

// record upserts rec into the index (keeping the size of an image stored
// before) and returns it.
func (s *Store) record(rec record) (*record, error) {
	rec.Created = time.Now().UTC()
	err := s.updateIndex(func(recs []record) ([]record, error) {
		rec.Size = -1
		out := recs[:0]
		for _, r := range recs {
			if r.ID == rec.ID && rec.Size < 0 {
				rec.Size = r.Size
			}
			if r.Ref == rec.Ref && r.Platform == rec.Platform {
				if r.ID == rec.ID {
					rec.Created = r.Created // re-pulled unchanged: stored back then
				}
				continue
			}
			out = append(out, r)
		}
		if rec.Size < 0 {
			rec.Size = treeSize(s.rootPath(rec.ID))
		}
		return append(out, rec), nil
	})
	if err != nil {
		return nil, err
	}
	return &rec, nil
}
