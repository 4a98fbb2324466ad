//go:build linux

package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/internal/vmboot"
)

// diskName is the box's disk in its directory.
const diskName = "disk.qcow2"

// overlayDisk makes the box's qcow2 overlay on base unless it exists: a box
// keeps its disk across stop and start.
func overlayDisk(ctx context.Context, dir, base string) (string, error) {
	return newOverlay(ctx, filepath.Join(dir, diskName), base, "raw")
}

// newOverlay makes a qcow2 overlay at out on backing (of that format)
// unless out exists.
func newOverlay(ctx context.Context, out, backing, format string) (string, error) {
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	img, err := vmboot.LookTool("qemu-img", "qemu-utils")
	if err != nil {
		return "", err
	}
	tmp := out + ".tmp"
	cmd := exec.CommandContext(ctx, img, "create", "-q", "-f", "qcow2", "-b", backing, "-F", format, tmp)
	if b, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", errdefs.Wrap(errdefs.Internal, err, "qemu-img create: %s", strings.TrimSpace(string(b)))
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", errdefs.Wrap(errdefs.Internal, err, "box disk")
	}
	return out, nil
}
