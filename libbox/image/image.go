package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/libbox/libbox/errdefs"
)

// Config is the image config the runtime honours as box defaults.
type Config struct {
	Env        []string `json:"env,omitempty"` // KEY=VALUE
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
}

// Image is an image in the store.
type Image struct {
	// Ref is the normalized reference: "busybox", "docker.io/library/alpine:3.20",
	// "oci-layout:/abs/dir:tag", "docker-archive:/abs/file.tar".
	Ref string
	// ID is "sha256:<hex>" of the image config (of the tarball for busybox).
	ID string
	// Root is the absolute path of the unpacked root filesystem. It is
	// complete and never modified: use it read-only (overlay lower dir, or
	// copy it). It stays in place while any reference to ID remains, and
	// Remove leaves it alone while inUse reports ID as used.
	Root    string
	Config  Config
	Size    int64     // bytes of regular files under Root (approx.)
	Created time.Time // when stored locally
}

// Progress reports the transfer of one layer.
type Progress struct {
	Layer       string // layer digest
	Done, Total int64  // bytes; Total is -1 when unknown
}

// Options tune Get and Pull.
type Options struct {
	// Platform is "os/arch[/variant]" to pick from multi-arch images;
	// default: linux and the host's architecture.
	Platform string
	// Progress, if not nil, receives layer progress from any goroutine, and
	// concurrently for layers fetched in parallel. It is never called after
	// Get or Pull returns and must not block for long.
	Progress func(Progress)
	// InUse, if not nil, reports whether a box uses an image ID. With it, a
	// pull that moves a reference to another image deletes the image it
	// superseded (and blobs nothing refers to) unless InUse says it is used.
	InUse func(imageID string) bool
}

// Store is an image store on one directory. Its methods are safe for
// concurrent use; several processes may share the directory.
type Store struct {
	dir       string
	reg       registryConfig
	transport *strictTransport

	cancel context.CancelFunc
	wg     sync.WaitGroup // flight goroutines
	fl     *flights

	closeOnce sync.Once
	mu        sync.Mutex
	// closed is set by Close; guarded by mu.
	closed bool
}

// Open opens (creating it if needed) the store in dir, usually
// $LIBBOX_HOME/images, with the given registry settings.
func Open(dir string, registries Registries) (*Store, error) {
	if dir == "" {
		return nil, errdefs.New(errdefs.InvalidArgument, "image store directory is empty: pass $LIBBOX_HOME/images")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.InvalidArgument, err, "image store directory %q", dir)
	}
	reg, err := newRegistryConfig(registries)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{abs, filepath.Join(abs, "blobs", "sha256"), filepath.Join(abs, "roots"), filepath.Join(abs, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, errdefs.Wrap(errdefs.FailedPrecondition, err, "create image store %s: check its permissions", abs)
		}
	}
	s := &Store{dir: abs, reg: reg, transport: newStrictTransport(reg)}
	s.clearTmp()
	base, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.fl = &flights{base: base, wg: &s.wg, m: map[string]*flight{}}
	return s, nil
}

// clearTmp removes work left by interrupted pulls, unless another process
// is installing right now (it holds the gc lock shared).
func (s *Store) clearTmp() {
	unlock, err := lockFile(s.gcLockPath(), true, false)
	if err != nil {
		return
	}
	defer unlock()
	ents, _ := os.ReadDir(s.tmpDir())
	for _, e := range ents {
		removeTree(filepath.Join(s.tmpDir(), e.Name()))
	}
}

// Close stops pulls in flight and waits for them. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.cancel()
		s.wg.Wait()
		s.transport.close()
	})
	return nil
}

func (s *Store) checkOpen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errdefs.New(errdefs.FailedPrecondition, "image store %s is closed", s.dir)
	}
	return nil
}

func (s *Store) tmpDir() string     { return filepath.Join(s.dir, "tmp") }
func (s *Store) gcLockPath() string { return filepath.Join(s.dir, "gc.lock") }
func (s *Store) blobPath(d v1.Hash) string {
	return filepath.Join(s.dir, "blobs", d.Algorithm, d.Hex)
}
func (s *Store) rootPath(id string) string {
	h, err := v1.NewHash(id)
	if err != nil {
		return filepath.Join(s.dir, "roots", "invalid")
	}
	return filepath.Join(s.dir, "roots", h.Hex)
}

func (s *Store) parse(ref string, platform string) (parsedRef, string, v1.Platform, error) {
	pr, err := parseRef(ref, s.reg.isInsecure)
	if err != nil {
		return pr, "", v1.Platform{}, err
	}
	pl, err := parsePlatform(platform)
	if err != nil {
		return pr, "", pl, err
	}
	return pr, platformString(pl), pl, nil
}

func (s *Store) toImage(r record) Image {
	return Image{Ref: r.Ref, ID: r.ID, Root: s.rootPath(r.ID), Config: r.Config, Size: r.Size, Created: r.Created}
}

// find returns the record for norm and platform; with platform "" it
// prefers the host's platform and falls back to any. Records whose root is
// missing count as absent.
func (s *Store) find(norm, platform string) (*record, error) {
	recs, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	host := platformString(mustPlatform(""))
	var any *record
	for i := range recs {
		r := &recs[i]
		if r.Ref != norm {
			continue
		}
		if _, err := os.Stat(s.rootPath(r.ID)); err != nil {
			continue
		}
		if r.Platform == platform || platform == "" && r.Platform == host {
			return r, nil
		}
		if platform == "" && any == nil {
			any = r
		}
	}
	if any != nil {
		return any, nil
	}
	return nil, errdefs.New(errdefs.NotFound, "image %s is not in the store: pull it first", norm)
}

func mustPlatform(p string) v1.Platform {
	pl, _ := parsePlatform(p)
	return pl
}

// Lookup returns a stored image without any fetching; NotFound if absent.
// ref may also be an image ID or its unique prefix (names win over IDs).
func (s *Store) Lookup(ctx context.Context, ref string) (*Image, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	pr, perr := parseRef(ref, s.reg.isInsecure)
	var ferr error
	if perr == nil {
		r, err := s.find(pr.norm, "")
		if err == nil {
			img := s.toImage(*r)
			return &img, nil
		}
		ferr = err
	}
	r, err := s.byID(ref)
	switch {
	case err != nil:
		return nil, err
	case r != nil:
		img := s.toImage(*r)
		return &img, nil
	case perr != nil:
		return nil, perr
	}
	return nil, ferr
}

// Get returns the image, installing the builtin busybox, importing an
// offline source or pulling from a registry only when it is not stored yet.
// A stored image costs no registry request. Concurrent Gets of one missing
// image share one pull.
func (s *Store) Get(ctx context.Context, ref string, opts Options) (*Image, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	pr, plat, pl, err := s.parse(ref, opts.Platform)
	if err != nil {
		return nil, err
	}
	if r, err := s.find(pr.norm, plat); err == nil {
		img := s.toImage(*r)
		return &img, nil
	} else if !errdefs.IsNotFound(err) {
		return nil, err
	}
	if r, err := s.byID(ref); r != nil || err != nil {
		if err != nil {
			return nil, err
		}
		img := s.toImage(*r)
		return &img, nil
	}
	return s.fetch(ctx, "get", pr, plat, pl, opts, true)
}

// Pull fetches the image from its source even if stored, so a moved tag is
// followed: for a registry it resolves the manifest and downloads only
// blobs not yet cached. The builtin busybox is installed, never fetched.
func (s *Store) Pull(ctx context.Context, ref string, opts Options) (*Image, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	pr, plat, pl, err := s.parse(ref, opts.Platform)
	if err != nil {
		return nil, err
	}
	return s.fetch(ctx, "pull", pr, plat, pl, opts, pr.kind == kindBuiltin)
}

func (s *Store) fetch(ctx context.Context, op string, pr parsedRef, plat string, pl v1.Platform,
	opts Options, reuse bool) (*Image, error) {
	v, err := s.fl.do(ctx, op+"\x00"+pr.norm+"\x00"+plat, opts.Progress, func(ctx context.Context, report func(Progress)) (any, error) {
		if reuse {
			if r, err := s.find(pr.norm, plat); err == nil { // another process may have done it
				return r, nil
			}
		}
		var src *imageSrc
		var err error
		switch pr.kind {
		case kindBuiltin:
			return s.installBuiltin(ctx, pr.norm, plat)
		case kindRegistry:
			src, err = s.remoteSource(ctx, pr, pl)
		case kindLayout:
			src, err = layoutSource(pr, pl)
		case kindArchive:
			src, err = archiveSource(pr)
		}
		if err != nil {
			return nil, err
		}
		var want *v1.Platform
		if opts.Platform != "" {
			want = &pl
		}
		return s.install(ctx, pr.norm, plat, want, src, report)
	})
	if err != nil {
		if ctx.Err() != nil && !errdefs.IsDeadlineExceeded(err) && !errdefs.IsCanceled(err) {
			err = errdefs.Wrap(errdefs.CodeOf(ctx.Err()), ctx.Err(), "get image %s", pr.norm)
		}
		return nil, err
	}
	if opts.InUse != nil {
		// Collect what a moved reference left behind; quietly skipped while
		// another pull runs (a later pull or prune collects it).
		s.collect(opts.InUse, false)
	}
	img := s.toImage(*v.(*record))
	return &img, nil
}

// List returns every stored image (the builtin one once installed), sorted
// by reference.
func (s *Store) List(ctx context.Context) ([]Image, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	recs, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	out := []Image{}
	for _, r := range recs {
		if _, err := os.Stat(s.rootPath(r.ID)); err == nil {
			out = append(out, s.toImage(r))
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
}

// Remove deletes ref (every platform of it; ref may also be an image ID).
// If no other reference keeps its image, the image is deleted unless
// inUse(id) says a box uses it: then Remove fails with FailedPrecondition,
// or with force drops the reference and leaves the root in place for a
// later Remove to collect once unused. inUse may be nil.
func (s *Store) Remove(ctx context.Context, ref string, force bool, inUse func(imageID string) bool) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	used := func(id string) bool { return inUse != nil && inUse(id) }
	var norm string
	pr, perr := parseRef(ref, s.reg.isInsecure)
	if perr == nil {
		if _, err := s.find(pr.norm, ""); err == nil {
			norm = pr.norm
		}
	}
	if norm == "" {
		r, err := s.byID(ref)
		switch {
		case err != nil:
			return err
		case r != nil:
			norm = r.ID
		case perr != nil:
			return perr
		default:
			norm = pr.norm
		}
	}
	err := s.updateIndex(func(recs []record) ([]record, error) {
		var keep, drop []record
		for _, r := range recs {
			if r.Ref == norm || r.ID == norm {
				drop = append(drop, r)
			} else {
				keep = append(keep, r)
			}
		}
		if len(drop) == 0 {
			return nil, errdefs.New(errdefs.NotFound, "image %s is not in the store (stored images are listed by `box images`)", ref)
		}
		if !force {
			for _, d := range drop {
				if stillReferenced(keep, d.ID) {
					continue
				}
				if used(d.ID) {
					return nil, errdefs.New(errdefs.FailedPrecondition,
						"image %s (%s) is used by a box: remove the box first, or force the removal", ref, d.ID)
				}
			}
		}
		return keep, nil
	})
	if err != nil {
		return err
	}
	_, err = s.collect(used, false)
	return err
}

func stillReferenced(recs []record, id string) bool {
	for _, r := range recs {
		if r.ID == id {
			return true
		}
	}
	return false
}

// byID finds the image whose ID is id ("sha256:<hex>", "<hex>") or starts
// with it (at least 4 hex digits, as `box images` prints 12): nil without
// error when none matches, InvalidArgument when several do.
func (s *Store) byID(id string) (*record, error) {
	hexPart := strings.TrimPrefix(id, "sha256:")
	if len(hexPart) < 4 || len(hexPart) > 64 || strings.Trim(hexPart, "0123456789abcdef") != "" {
		return nil, nil
	}
	recs, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	var found *record
	for i := range recs {
		r := &recs[i]
		if !strings.HasPrefix(strings.TrimPrefix(r.ID, "sha256:"), hexPart) {
			continue
		}
		if _, err := os.Stat(s.rootPath(r.ID)); err != nil {
			continue
		}
		if found != nil && found.ID != r.ID {
			return nil, errdefs.New(errdefs.InvalidArgument,
				"image ID %s is ambiguous (it starts both %s and %s): give more digits", id, found.ID, r.ID)
		}
		if found == nil {
			found = r
		}
	}
	if found == nil && len(hexPart) == 64 {
		// Unreferenced (a moved tag, a forced removal) but kept for a box.
		if _, err := os.Stat(s.rootPath("sha256:" + hexPart)); err == nil {
			found = &record{Ref: "sha256:" + hexPart, ID: "sha256:" + hexPart, Size: -1}
		}
	}
	return found, nil
}

// PruneReport says what Prune deleted.
type PruneReport struct {
	Roots int   // unpacked images no reference or box kept
	Blobs int   // cached blobs (layers, configs) no stored image needs
	Bytes int64 // disk space given back (approx.)
}

// Prune deletes every root no reference keeps and no box uses (inUse may
// be nil: then no root counts as used), every blob no stored image needs,
// and the partial downloads of interrupted pulls. It waits (within ctx)
// while pulls run in this or another process.
func (s *Store) Prune(ctx context.Context, inUse func(imageID string) bool) (PruneReport, error) {
	if err := s.checkOpen(); err != nil {
		return PruneReport{}, err
	}
	used := func(id string) bool { return inUse != nil && inUse(id) }
	t := time.NewTicker(lockPoll)
	defer t.Stop()
	for {
		rep, err := s.collect(used, true)
		if !errors.Is(err, errLocked) {
			return rep, err
		}
		select {
		case <-ctx.Done():
			return PruneReport{}, errdefs.Wrap(errdefs.CodeOf(ctx.Err()), ctx.Err(), "prune images: a pull kept the store busy")
		case <-t.C:
		}
	}
}

// collect deletes roots and blobs no record refers to, sparing roots that
// are in use, and with partials the leftovers of interrupted downloads. It
// returns errLocked while any install runs (they hold the gc lock shared).
func (s *Store) collect(used func(string) bool, partials bool) (PruneReport, error) {
	var rep PruneReport
	unlock, err := lockFile(s.gcLockPath(), true, false)
	if err != nil {
		return rep, errLocked
	}
	defer unlock()
	recs, err := s.readIndex()
	if err != nil {
		return rep, err
	}
	ids, blobs := map[string]bool{}, map[string]bool{}
	for _, r := range recs {
		h, _ := v1.NewHash(r.ID)
		ids[h.Hex] = true
		blobs[h.Hex] = true
		for _, l := range r.Layers {
			if h, err := v1.NewHash(l); err == nil {
				blobs[h.Hex] = true
			}
		}
	}
	roots, _ := os.ReadDir(filepath.Join(s.dir, "roots"))
	for _, e := range roots {
		if !ids[e.Name()] && !used("sha256:"+e.Name()) {
			p := filepath.Join(s.dir, "roots", e.Name())
			size := treeSize(p)
			if err := removeTree(p); err != nil {
				return rep, errdefs.Wrap(errdefs.Internal, err, "remove image root %s", e.Name())
			}
			rep.Roots++
			rep.Bytes += size
		}
	}
	bl, _ := os.ReadDir(filepath.Join(s.dir, "blobs", "sha256"))
	for _, e := range bl {
		if !blobs[e.Name()] {
			fi, _ := e.Info()
			if os.Remove(filepath.Join(s.dir, "blobs", "sha256", e.Name())) == nil {
				rep.Blobs++
				if fi != nil {
					rep.Bytes += fi.Size()
				}
			}
		}
	}
	if partials {
		// No download runs: each holds the gc lock shared.
		ents, _ := os.ReadDir(s.partialDir())
		for _, e := range ents {
			fi, _ := e.Info()
			if os.Remove(filepath.Join(s.partialDir(), e.Name())) == nil && fi != nil {
				rep.Bytes += fi.Size()
			}
		}
	}
	return rep, nil
}
