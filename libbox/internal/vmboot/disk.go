package vmboot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
)

// diskHeadroom is the free space a box gets on top of its image, and
// diskMin the smallest root disk. The base is a sparse file and each box
// writes into its own qcow2 overlay, so unused space costs nothing.
const (
	diskHeadroom = 2 << 30
	diskMin      = 1 << 30
)

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// BaseDisk returns the cached ext4 image of an image root, building it
// when missing. Builds are atomic (temp file + rename) and serialised per
// image by a lock file, so concurrent boxes of one image build it once.
func BaseDisk(ctx context.Context, cacheDir, imageRoot, imageID string) (string, error) {
	if imageID == "" {
		sum := sha256.Sum256([]byte(imageRoot))
		imageID = "path-" + hex.EncodeToString(sum[:8])
	}
	name := unsafeName.ReplaceAllString(imageID, "_")
	if len(name) > 100 {
		sum := sha256.Sum256([]byte(imageID))
		name = hex.EncodeToString(sum[:16])
	}
	dir := filepath.Join(cacheDir, "disks")
	out := filepath.Join(dir, name+".ext4")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", errdefs.Wrap(errdefs.Internal, err, "disk cache")
	}
	lock, err := os.OpenFile(out+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", errdefs.Wrap(errdefs.Internal, err, "disk cache lock")
	}
	defer lock.Close()
	if err := flockCtx(ctx, int(lock.Fd())); err != nil {
		return "", err
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	if _, err := os.Stat(out); err == nil {
		return out, nil // built by someone else meanwhile
	}
	used, err := treeSize(imageRoot)
	if err != nil {
		return "", errdefs.Wrap(errdefs.NotFound, err, "image root")
	}
	size := max(used*3/2+diskHeadroom, diskMin)
	size = (size + 1<<20 - 1) &^ (1<<20 - 1)
	tmp := out + ".tmp"
	_ = os.Remove(tmp)
	defer os.Remove(tmp)
	f, err := os.Create(tmp)
	if err != nil {
		return "", errdefs.Wrap(errdefs.Internal, err, "disk image")
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		return "", errdefs.Wrap(errdefs.Internal, err, "disk image")
	}
	mkfs, err := LookTool("mkfs.ext4", "e2fsprogs")
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, mkfs, "-q", "-F", "-t", "ext4", "-L", "libbox-root",
		"-E", "root_owner=0:0", "-d", imageRoot, tmp)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", errdefs.Wrap(errdefs.Internal, err, "mkfs.ext4 -d %s: %s", imageRoot, strings.TrimSpace(string(b)))
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", errdefs.Wrap(errdefs.Internal, err, "disk image")
	}
	return out, nil
}

// treeSize is the apparent size of a directory tree, with a little per
// entry for inodes and directory blocks.
func treeSize(root string) (int64, error) {
	var n int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n += 4096
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n, err
}

// flockCtx takes an exclusive flock, giving up when ctx ends.
func flockCtx(ctx context.Context, fd int) error {
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			return errdefs.Wrap(errdefs.Internal, err, "flock")
		}
		if err := SleepCtx(ctx, 50e6); err != nil {
			return errdefs.Wrap(errdefs.DeadlineExceeded, err, "waiting for another process building the same disk image")
		}
	}
}
