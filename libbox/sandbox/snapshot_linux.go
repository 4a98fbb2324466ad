package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/internal/hostid"
)

// A sandbox snapshot is one overlay layer, <snapshot dir>/fs, stored the
// way the image is: a file a box sees as owned by its uid N is owned by
// host uid N (the box's layers are id-mapped like the image). The box's
// own upper dir holds its host ids (its slice), so a layer made from it is
// shifted down by the slice's base.

var _ backend.Snapshotter = (*Backend)(nil)

// layerFS is the overlay layer inside a snapshot directory.
func layerFS(snapshotDir string) string { return filepath.Join(snapshotDir, "fs") }

// Snapshot makes dst/fs from the box's upper dir. A stopped box's upper
// dir is moved there (nothing is copied) and the box continues on a new,
// empty one above it; a running box is frozen (cgroup freezer) while its
// upper dir is copied, reflinked where the file system can, then thawed.
func (b *Backend) Snapshot(ctx context.Context, spec backend.Spec, inst backend.Instance, dst string) (backend.SnapshotResult, error) {
	shift, err := idShift(spec.Dir)
	if err != nil {
		return backend.SnapshotResult{}, err
	}
	upper := filepath.Join(spec.Dir, "upper")
	if inst == nil {
		if err := os.MkdirAll(upper, 0o755); err != nil {
			return backend.SnapshotResult{}, errdefs.Wrap(errdefs.Internal, err, "sandbox upper dir")
		}
		if err := os.Rename(upper, layerFS(dst)); err != nil {
			return backend.SnapshotResult{}, errdefs.Wrap(errdefs.Internal, err, "snapshot layer")
		}
		if err := chownTree(layerFS(dst), shift); err != nil {
			_ = os.Rename(layerFS(dst), upper)
			return backend.SnapshotResult{}, errdefs.Wrap(errdefs.Internal, err, "snapshot layer ownership")
		}
		// The work dir may hold leftovers that name files of the old upper.
		_ = os.RemoveAll(filepath.Join(spec.Dir, "work"))
		return backend.SnapshotResult{OnTop: true}, nil
	}
	in, ok := inst.(*instance)
	if !ok {
		return backend.SnapshotResult{}, errdefs.New(errdefs.Internal, "sandbox snapshot: not a sandbox instance")
	}
	thaw, err := in.cg.Freeze(ctx)
	if err != nil {
		return backend.SnapshotResult{}, err
	}
	c := copier{shift: shift}
	err = c.copyTree(upper, layerFS(dst))
	if terr := thaw(); err == nil && terr != nil {
		err = terr
	}
	if err != nil {
		_ = os.RemoveAll(layerFS(dst))
		return backend.SnapshotResult{}, errdefs.Wrap(errdefs.Internal, err, "copy the box's upper dir")
	}
	return backend.SnapshotResult{Written: c.written}, nil
}

// Reset gives a stopped box an empty upper dir (its file system is then
// its layers over the image).
func (b *Backend) Reset(ctx context.Context, spec backend.Spec) error {
	for _, d := range []string{"upper", "work"} {
		if err := os.RemoveAll(filepath.Join(spec.Dir, d)); err != nil {
			return errdefs.Wrap(errdefs.Internal, err, "reset box layer")
		}
	}
	return nil
}

// idShift returns the function that turns the owner of a file in the
// box's upper dir into the owner stored in a layer.
func idShift(dir string) (func(uid, gid uint32) (uint32, uint32), error) {
	if os.Geteuid() != 0 {
		// The box's ids are this user's: the layer keeps them.
		return func(u, g uint32) (uint32, uint32) { return u, g }, nil
	}
	sl, _, err := hostid.Alloc(dir)
	if err != nil {
		return nil, err
	}
	return func(u, g uint32) (uint32, uint32) {
		if u >= sl.UID && u-sl.UID < hostid.SliceSize {
			u -= sl.UID
		}
		if g >= sl.GID && g-sl.GID < hostid.SliceSize {
			g -= sl.GID
		}
		return u, g
	}, nil
}

// chownTree shifts the owner of every file under root, in place.
func chownTree(root string, shift func(uid, gid uint32) (uint32, uint32)) error {
	return filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		u, g := shift(st.Uid, st.Gid)
		if u == st.Uid && g == st.Gid {
			return nil
		}
		if err := unix.Lchown(p, int(u), int(g)); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK && st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
			return unix.Chmod(p, st.Mode&0o7777) // chown cleared them
		}
		return nil
	})
}

// copier copies an overlay layer: every file gets its own data (a reflink
// where the file system has them, else a plain copy, never a hard link to
// the live layer), owners shifted, modes, times and extended attributes
// (overlay's opaque marks among them) kept; whiteouts (0:0 character
// devices) and other device nodes are made again.
type copier struct {
	shift   func(uid, gid uint32) (uint32, uint32)
	written int64 // bytes of file data copied (not reflinked)
	noClone bool  // FICLONE failed once: the file system has no reflinks
}

func (c *copier) copyTree(src, dst string) error {
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := os.Mkdir(dst, 0o700); err != nil {
			return err
		}
		ents, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := c.copyTree(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
				return err
			}
		}
	case unix.S_IFREG:
		if err := c.copyFile(src, dst, &st); err != nil {
			return err
		}
	case unix.S_IFLNK:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, dst); err != nil {
			return err
		}
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO:
		if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil {
			return fmt.Errorf("make %s: %w", dst, err)
		}
	default:
		return nil // a socket: nothing to keep
	}
	return c.finish(src, dst, &st)
}

func (c *copier) copyFile(src, dst string, st *unix.Stat_t) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if !c.noClone && st.Size > 0 {
		if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err == nil {
			return out.Close()
		}
		c.noClone = true
	}
	n, err := io.Copy(out, in)
	c.written += n
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// finish sets the metadata of dst as src's (owner shifted).
func (c *copier) finish(src, dst string, st *unix.Stat_t) error {
	if err := copyXattrs(src, dst); err != nil {
		return err
	}
	u, g := c.shift(st.Uid, st.Gid)
	if err := unix.Lchown(dst, int(u), int(g)); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
			return err
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func copyXattrs(src, dst string) error {
	size, err := unix.Llistxattr(src, nil)
	if err != nil || size == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		return err
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(src, buf)
	if err != nil {
		return err
	}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		v, err := getXattr(src, name)
		if err != nil {
			return err
		}
		if err := unix.Lsetxattr(dst, name, v, 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("set %s on %s: %w", name, dst, err)
		}
	}
	return nil
}

func getXattr(p, name string) ([]byte, error) {
	n, err := unix.Lgetxattr(p, name, nil)
	if err != nil {
		return nil, err
	}
	v := make([]byte, n)
	n, err = unix.Lgetxattr(p, name, v)
	return v[:n], err
}
