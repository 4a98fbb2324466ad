//go:build linux

package qemu

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/internal/vmboot"
)

// diskName is the box's qcow2 overlay in its dir, and the read-only qcow2
// layer in a snapshot dir.
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
	if err := createOverlay(ctx, out, backing, format, ""); err != nil {
		return "", err
	}
	return out, nil
}

// createOverlay makes a qcow2 file at out whose backing file is backing
// (of format backingFmt), through a temp file and rename. size is the
// virtual size when the backing file must not be opened (it is in use by
// a running QEMU); empty: the backing file's.
func createOverlay(ctx context.Context, out, backing, backingFmt, size string) error {
	tmp := out + ".tmp"
	args := []string{"create", "-q", "-f", "qcow2", "-b", backing, "-F", backingFmt}
	if size != "" {
		args = append(args, "-u")
	}
	args = append(args, tmp)
	if size != "" {
		args = append(args, size)
	}
	if _, err := qemuImg(ctx, args...); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Remove(tmp)
		return errdefs.Wrap(errdefs.Internal, err, "box disk")
	}
	return nil
}

// virtualSize reads a qcow2 file's virtual size (also while a running
// QEMU holds it).
func virtualSize(ctx context.Context, path string) (string, error) {
	out, err := qemuImg(ctx, "info", "-U", "--output=json", path)
	if err != nil {
		return "", err
	}
	var info struct {
		VirtualSize json.Number `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil || info.VirtualSize == "" {
		return "", errdefs.New(errdefs.Internal, "qemu-img info %s: no virtual size (%v)", path, err)
	}
	return info.VirtualSize.String(), nil
}

func qemuImg(ctx context.Context, args ...string) ([]byte, error) {
	img, err := vmboot.LookTool("qemu-img", "qemu-utils")
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, img, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "qemu-img %s: %s", args[0], strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
