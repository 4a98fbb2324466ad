package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/klauspost/compress/zstd"

	"github.com/libbox/libbox/errdefs"
)

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// unpacker applies layer tars, in order, into one root directory. Every path
// is resolved inside the root (os.Root): an entry can neither name a path
// outside it nor write through a symlink that leads out of it.
type unpacker struct {
	root  *os.Root
	chown bool // running as root: keep the image's ownership
	// dirs holds the final mode and mtime of every directory entry; they are
	// applied by finish, once nothing more is written into the directories.
	dirs map[string]*tar.Header
	// resolved caches resolve's results; cleared by forget.
	resolved map[string]string
}

func newUnpacker(dir string) (*unpacker, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "open unpack dir")
	}
	return &unpacker{root: r, chown: os.Geteuid() == 0, dirs: map[string]*tar.Header{}, resolved: map[string]string{}}, nil
}

func (u *unpacker) close() { u.root.Close() }

// decompress returns a reader of the tar inside a layer blob (gzip, zstd or
// plain tar, recognised by their magic numbers).
func decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, err
		}
		return zr, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, err
		}
		return zr.IOReadCloser(), nil
	}
	return io.NopCloser(br), nil
}

// entryError classifies a failure on one tar entry, naming the entry.
func entryError(layer, entry string, err error) error {
	var pe *fs.PathError
	var le *os.LinkError
	msg := err.Error()
	switch {
	case strings.Contains(msg, "escapes from parent"), strings.Contains(msg, "path escapes"):
		return errdefs.New(errdefs.InvalidArgument,
			"layer %s: entry %q escapes the root filesystem through a symlink: the image is unsafe, rebuild it", layer, entry)
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.ELOOP), errors.Is(err, fs.ErrNotExist),
		errors.As(err, &pe) && errors.Is(pe.Err, syscall.EINVAL), errors.As(err, &le) && errors.Is(le.Err, syscall.EINVAL):
		return errdefs.Wrap(errdefs.InvalidArgument, err, "layer %s: bad entry %q", layer, entry)
	}
	return errdefs.Wrap(errdefs.Internal, err, "layer %s: unpack entry %q (is the disk full?)", layer, entry)
}

// cleanName turns a tar entry name into a clean relative path, rejecting
// absolute names and names that climb out with "..".
func cleanName(layer, name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", errdefs.New(errdefs.InvalidArgument,
			"layer %s: entry %q has an absolute path: the image is unsafe, rebuild it", layer, name)
	}
	p := path.Clean(name)
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", errdefs.New(errdefs.InvalidArgument,
			"layer %s: entry %q climbs out of the root filesystem: the image is unsafe, rebuild it", layer, name)
	}
	return p, nil
}

// layerState is what one layer has written so far: whiteouts and opaque
// markers hide lower layers only, never the layer's own entries, wherever
// they come in the tar.
type layerState struct {
	seen map[string]bool // paths this layer wrote
	anc  map[string]bool // directories holding paths this layer wrote
}

func (l *layerState) mark(p string) {
	l.seen[p] = true
	for d := path.Dir(p); d != "." && !l.anc[d]; d = path.Dir(d) {
		l.anc[d] = true
	}
}

// apply unpacks one layer tar (already decompressed).
func (u *unpacker) apply(ctx context.Context, r io.Reader, layer string) error {
	tr := tar.NewReader(r)
	l := &layerState{seen: map[string]bool{}, anc: map[string]bool{}}
	for n := 0; ; n++ {
		if n%256 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return errdefs.Wrap(errdefs.InvalidArgument, err, "layer %s: corrupt tar stream", layer)
		}
		p, err := cleanName(layer, hdr.Name)
		if err != nil {
			return err
		}
		if p == "." {
			continue
		}
		dir, base := path.Split(p)
		if dir, err = u.resolve(path.Clean(dir)); err != nil {
			return entryError(layer, hdr.Name, err)
		}
		if dir != "." {
			if err := u.root.MkdirAll(dir, 0o755); err != nil {
				return entryError(layer, hdr.Name, err)
			}
		}
		p = path.Join(dir, base)
		switch {
		case base == opaqueMarker:
			if err := u.hideLower(dir, l); err != nil {
				return entryError(layer, hdr.Name, err)
			}
			continue
		case strings.HasPrefix(base, whiteoutPrefix):
			hidden := base[len(whiteoutPrefix):]
			if hidden == "" || hidden == "." || hidden == ".." || strings.Contains(hidden, "/") {
				return errdefs.New(errdefs.InvalidArgument,
					"layer %s: whiteout entry %q names no file: the image is unsafe, rebuild it", layer, hdr.Name)
			}
			if err := u.whiteout(path.Join(dir, hidden), l); err != nil {
				return entryError(layer, hdr.Name, err)
			}
			continue
		}
		if err := u.entry(tr, hdr, p, layer); err != nil {
			return err
		}
		l.mark(p)
	}
}

// whiteout removes p as lower layers left it. When this layer wrote inside
// p already, only the lower content goes.
func (u *unpacker) whiteout(p string, l *layerState) error {
	u.forget()
	if l.anc[p] || l.seen[p] {
		if fi, err := u.root.Lstat(p); err == nil && fi.IsDir() {
			return u.hideLower(p, l)
		}
		return nil
	}
	return u.root.RemoveAll(p)
}

// hideLower empties dir of everything lower layers put there, at any depth,
// keeping what this layer wrote (before or after its opaque marker).
func (u *unpacker) hideLower(dir string, l *layerState) error {
	u.forget()
	f, err := u.root.Open(dir)
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		p := path.Join(dir, n)
		if l.anc[p] || l.seen[p] {
			// This layer's: keep it, but empty a directory of lower content.
			if fi, err := u.root.Lstat(p); err == nil && fi.IsDir() {
				if err := u.hideLower(p, l); err != nil {
					return err
				}
			}
			continue
		}
		if err := u.root.RemoveAll(p); err != nil {
			return err
		}
	}
	return nil
}

// maxLinks bounds the symlinks followed resolving one path (as Linux does).
const maxLinks = 40

// resolve returns p (clean, relative) with every symlink in it resolved the
// way the image's programs see it once the root is their "/": an absolute
// target starts again at the root and ".." stops at the root, so the result
// always lies inside. Missing components are kept as they are (MkdirAll
// creates them). Results are cached until a layer changes the tree's
// directories or symlinks.
func (u *unpacker) resolve(p string) (string, error) {
	if p == "." {
		return p, nil
	}
	if r, ok := u.resolved[p]; ok {
		return r, nil
	}
	var out []string
	todo := strings.Split(p, "/")
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			continue
		}
		cur := path.Join(append(out, c)...)
		fi, err := u.root.Lstat(cur)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			out = append(out, c)
			continue
		}
		if links++; links > maxLinks {
			return "", &fs.PathError{Op: "resolve", Path: p, Err: syscall.ELOOP}
		}
		target, err := u.root.Readlink(cur)
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(target, "/") {
			out = out[:0]
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	r := "."
	if len(out) > 0 {
		r = path.Join(out...)
	}
	u.resolved[p] = r
	return r, nil
}

// forget drops cached resolutions (the tree's symlinks or directories changed).
func (u *unpacker) forget() {
	if len(u.resolved) > 0 {
		clear(u.resolved)
	}
}

// mkdirIn creates dir (an absolute path in the image, e.g. its WorkingDir)
// inside the root, resolving symlinks inside the root. It is a no-op when
// the directory exists.
func (u *unpacker) mkdirIn(dir string) error {
	p := path.Clean(strings.TrimLeft(dir, "/"))
	if p == "." || p == ".." || strings.HasPrefix(p, "../") {
		return nil
	}
	r, err := u.resolve(p)
	if err != nil {
		return err
	}
	if r == "." {
		return nil
	}
	return u.root.MkdirAll(r, 0o755)
}

// replace removes what is at p unless both it and the new entry are
// directories (a directory entry over a directory only updates metadata).
func (u *unpacker) replace(p string, newIsDir bool) (keep bool, err error) {
	fi, err := u.root.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if fi.IsDir() && newIsDir {
		return true, nil
	}
	u.forget()
	return false, u.root.RemoveAll(p)
}

func (u *unpacker) entry(tr *tar.Reader, hdr *tar.Header, p, layer string) error {
	fail := func(err error) error { return entryError(layer, hdr.Name, err) }
	switch hdr.Typeflag {
	case tar.TypeDir:
		keep, err := u.replace(p, true)
		if err != nil {
			return fail(err)
		}
		if !keep {
			if err := u.root.Mkdir(p, 0o700); err != nil {
				return fail(err)
			}
		}
		u.dirs[p] = hdr
		return u.owner(p, hdr, fail)

	case tar.TypeReg, tar.TypeRegA:
		if _, err := u.replace(p, false); err != nil {
			return fail(err)
		}
		f, err := u.root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fail(err)
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return errdefs.Wrap(errdefs.Internal, err, "layer %s: write %q", layer, hdr.Name)
		}
		return u.meta(p, hdr, fail)

	case tar.TypeSymlink:
		if _, err := u.replace(p, false); err != nil {
			return fail(err)
		}
		u.forget()
		if err := u.root.Symlink(hdr.Linkname, p); err != nil {
			return fail(err)
		}
		return u.owner(p, hdr, fail)

	case tar.TypeLink:
		if strings.HasPrefix(hdr.Linkname, "/") {
			return errdefs.New(errdefs.InvalidArgument,
				"layer %s: hard link %q points to the absolute path %q: the image is unsafe, rebuild it", layer, hdr.Name, hdr.Linkname)
		}
		target := path.Clean(hdr.Linkname)
		if target == ".." || strings.HasPrefix(target, "../") {
			return errdefs.New(errdefs.InvalidArgument,
				"layer %s: hard link %q points out of the root filesystem (%q): the image is unsafe, rebuild it", layer, hdr.Name, hdr.Linkname)
		}
		tdir, tbase := path.Split(target)
		tdir, err := u.resolve(path.Clean(tdir))
		if err != nil {
			return fail(err)
		}
		if target = path.Join(tdir, tbase); target == p {
			return nil
		}
		if _, err := u.replace(p, false); err != nil {
			return fail(err)
		}
		if err := u.root.Link(target, p); err != nil {
			return fail(err)
		}
		return nil

	default:
		// Device nodes, FIFOs and unknown types are skipped: /dev comes from
		// the guest's devtmpfs.
		return nil
	}
}

// owner sets ownership (as root only) without following symlinks.
func (u *unpacker) owner(p string, hdr *tar.Header, fail func(error) error) error {
	if !u.chown {
		return nil
	}
	if err := u.root.Lchown(p, hdr.Uid, hdr.Gid); err != nil {
		return fail(err)
	}
	return nil
}

// meta sets ownership, mode (after chown, which clears set-id bits) and
// times of a regular file.
func (u *unpacker) meta(p string, hdr *tar.Header, fail func(error) error) error {
	if err := u.owner(p, hdr, fail); err != nil {
		return err
	}
	if err := u.root.Chmod(p, hdr.FileInfo().Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
		return fail(err)
	}
	at := hdr.AccessTime
	if at.IsZero() {
		at = hdr.ModTime
	}
	if err := u.root.Chtimes(p, at, hdr.ModTime); err != nil {
		return fail(err)
	}
	return nil
}

// finish applies directory modes and times, deepest first, once every layer
// is in place.
func (u *unpacker) finish() error {
	paths := make([]string, 0, len(u.dirs))
	for p := range u.dirs {
		paths = append(paths, p)
	}
	sort.Slice(paths, func(i, j int) bool { return strings.Count(paths[i], "/") > strings.Count(paths[j], "/") })
	for _, p := range paths {
		hdr := u.dirs[p]
		fi, err := u.root.Lstat(p)
		if err != nil || !fi.IsDir() {
			continue // removed or replaced by a later layer
		}
		if err := u.root.Chmod(p, hdr.FileInfo().Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return entryError("(final)", hdr.Name, err)
		}
		at := hdr.AccessTime
		if at.IsZero() {
			at = hdr.ModTime
		}
		if err := u.root.Chtimes(p, at, hdr.ModTime); err != nil {
			return entryError("(final)", hdr.Name, err)
		}
	}
	return u.root.Chmod(".", 0o755)
}

// treeSize is the approximate disk usage of a tree: the sum of its regular
// files' sizes.
func treeSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// removeTree deletes a tree even where the image made directories read-only
// (which stops a non-root owner from deleting their entries).
func removeTree(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
