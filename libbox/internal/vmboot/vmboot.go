// Package vmboot holds what every VM backend (libbox/qemu on Linux,
// libbox/vz on macOS) needs to boot a box and is not the hypervisor: the
// guest kernel lookup, the kernel modules a box needs and their load
// order, the initramfs (the agent as /init) and its cpio writer, the cached
// ext4 base disk of an image, the console tail for boot errors, the one
// kernel command line builder, and the CPU/memory defaults and volume tags.
//
// It builds on every OS. It never starts a VM or a process other than the
// tools that build its caches (mkfs.ext4, xz), never speaks the agent
// protocol, and never reads the environment: callers pass every setting.
package vmboot

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/internal/atomicfile"
)

// Defaults for a box that asks for nothing.
const (
	DefaultCPUs      = 1
	DefaultMemoryMiB = 512
)

// Limits returns a box's CPUs and memory with the defaults filled in for
// zero (or negative) values.
func Limits(cpus, memMiB int) (int, int) {
	if cpus <= 0 {
		cpus = DefaultCPUs
	}
	if memMiB <= 0 {
		memMiB = DefaultMemoryMiB
	}
	return cpus, memMiB
}

// VolumeTag is the virtiofs tag of a box's i-th volume.
func VolumeTag(i int) string { return "vol" + strconv.Itoa(i) }

// CacheDir is where VM caches (initramfs, base disks) live in a libbox home.
func CacheDir(home string) string { return filepath.Join(home, "vm") }

// ConsoleTail returns the last n lines of a box's console log (dir is the
// box directory, or any directory holding a console.log), for boot errors.
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

// SleepCtx sleeps d or until ctx ends.
func SleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// LookTool finds a host program or says which package to install.
func LookTool(name, pkg string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin"} {
			if st, e := os.Stat(filepath.Join(d, name)); e == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				return filepath.Join(d, name), nil
			}
		}
		return "", errdefs.New(errdefs.NotFound, "%s not found: %s", name, InstallHint(pkg))
	}
	return p, nil
}

// fedoraPackages names the Fedora package of a Debian one, where they differ.
var fedoraPackages = map[string]string{
	"qemu-system-x86": "qemu-system-x86-core",
	"qemu-utils":      "qemu-img",
	"util-linux":      "util-linux",
	"e2fsprogs":       "e2fsprogs",
}

// InstallHint says how to install a Debian package's contents on Debian,
// Ubuntu and Fedora hosts.
func InstallHint(pkg string) string {
	hint := "apt-get install " + pkg + " (Debian/Ubuntu)"
	if f, ok := fedoraPackages[pkg]; ok {
		hint += ", dnf install " + f + " (Fedora)"
	}
	return hint
}

// WriteAtomic makes dst's directory and replaces dst (mode 0644) with what
// fill writes, so readers see the whole file or none.
func WriteAtomic(dst string, fill func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(dst, atomicfile.Options{Perm: 0o644}, fill)
}

// WriteFileAtomic writes data to path with WriteAtomic.
func WriteFileAtomic(path string, data []byte) error {
	return WriteAtomic(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}
