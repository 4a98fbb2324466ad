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
}

func newUnpacker(dir string) (*unpacker, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "open unpack dir")
	}
	return &unpacker{root: r, chown: os.Geteuid() == 0, dirs: map[string]*tar.Header{}}, nil
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

// apply unpacks one layer tar (already decompressed).
func (u *unpacker) apply(ctx context.Context, r io.Reader, layer string) error {
	tr := tar.NewReader(r)
	seen := map[string]bool{} // paths this layer created: whiteouts hide lower layers only
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
		dir = path.Clean(dir)
		if dir != "." {
			if err := u.root.MkdirAll(dir, 0o755); err != nil {
				return entryError(layer, hdr.Name, err)
			}
		}
		switch {
		case base == opaqueMarker:
			if err := u.opaque(dir, seen); err != nil {
				return entryError(layer, hdr.Name, err)
			}
			continue
		case strings.HasPrefix(base, whiteoutPrefix):
			hidden := base[len(whiteoutPrefix):]
			if hidden == "" || hidden == "." || hidden == ".." {
				return errdefs.New(errdefs.InvalidArgument,
					"layer %s: whiteout entry %q names no file: the image is unsafe, rebuild it", layer, hdr.Name)
			}
			target := path.Join(dir, hidden)
			if !seen[target] {
				if err := u.root.RemoveAll(target); err != nil {
					return entryError(layer, hdr.Name, err)
				}
			}
			continue
		}
		if err := u.entry(tr, hdr, p, layer); err != nil {
			return err
		}
		seen[p] = true
	}
}

// opaque empties dir of everything lower layers put there.
func (u *unpacker) opaque(dir string, seen map[string]bool) error {
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
		if p := path.Join(dir, n); !seen[p] {
			if err := u.root.RemoveAll(p); err != nil {
				return err
			}
		}
	}
	return nil
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
		if target == p {
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
