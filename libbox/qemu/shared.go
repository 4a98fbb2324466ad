// Package qemu is libbox's Linux micro-VM backend: each box is a QEMU
// virtual machine with its own kernel, an initramfs whose /init is the box
// agent, a qcow2 overlay over a cached ext4 image of the box image, and the
// agent's gRPC stream on a virtio-serial port bound to a unix socket.
//
// It finds the kernel, decides the accelerator (KVM when a probe boot
// works, else TCG), builds the caches under <home>/vm, and starts, watches
// and stops QEMU processes. It never speaks the agent protocol, never
// touches the box store or the host's boot setup, and never leaves a QEMU
// running past the host process unless the box is detached.
//
// The pieces that are not QEMU (kernel lookup, initramfs, ext4 base disk,
// console tail, boot deadline) build on every OS and are shared with the
// macOS backend (libbox/vz) through the exported functions of this file.
package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CacheDir is where VM caches (initramfs, base disks) live in a libbox home.
func CacheDir(home string) string { return filepath.Join(home, "vm") }

// AgentInitramfs builds (or finds, cached by content) the initramfs whose
// /init is the agent at agentPath, with the modules of k that boxes need.
func AgentInitramfs(cacheDir, agentPath string, k Kernel) (string, error) {
	return agentInitramfs(cacheDir, agentPath, k)
}

// BaseDisk builds (or finds, cached per image id) the raw ext4 image of an
// image root; boxes never write to it.
func BaseDisk(ctx context.Context, cacheDir, imageRoot, imageID string) (string, error) {
	return baseDisk(ctx, cacheDir, imageRoot, imageID)
}

// sleepCtx sleeps d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ConsoleTail returns the last n lines of a box's console log (dir is the
// box directory), for boot errors.
func ConsoleTail(dir string, n int) string {
	f, err := os.Open(filepath.Join(dir, "console.log"))
	if err != nil {
		return ""
	}
	defer f.Close()
	const tailMax = 64 << 10
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-tailMax, 0)
	buf := make([]byte, st.Size()-off)
	nr, _ := f.ReadAt(buf, off)
	s := strings.ReplaceAll(string(buf[:nr]), "\r", "")
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// BootTimeout is how long a runtime should wait for a VM's agent to answer:
// LIBBOX_BOOT_TIMEOUT (a Go duration or seconds), default 120 s, generous
// enough for TCG on a loaded machine.
func BootTimeout() time.Duration {
	if v := os.Getenv("LIBBOX_BOOT_TIMEOUT"); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
		if n, err := strconv.ParseFloat(v, 64); err == nil && n > 0 {
			return time.Duration(n * float64(time.Second))
		}
	}
	return 120 * time.Second
}
