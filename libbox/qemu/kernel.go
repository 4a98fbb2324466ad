package qemu

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/libbox/libbox/errdefs"
)

// Kernel is a guest kernel image and the directory of its modules.
type Kernel struct {
	Image   string // vmlinuz
	Modules string // /lib/modules/<version> (may be "": a kernel with everything built in)
	Version string
}

// kernelCaches are where scripts/vm.sh unpacks Debian's cloud kernel.
func kernelCaches() []string {
	dirs := []string{"/var/cache/libbox/kernel"}
	if c, err := os.UserCacheDir(); err == nil {
		dirs = append(dirs, filepath.Join(c, "libbox", "kernel"))
	}
	return dirs
}

const kernelHint = "install one with `./build.sh deps` (downloads Debian's linux-image-cloud-amd64 into /var/cache/libbox/kernel), " +
	"`apt-get install linux-image-cloud-amd64`, or set LIBBOX_KERNEL=/path/to/vmlinuz (and LIBBOX_KERNEL_MODULES=/lib/modules/VERSION)"

// FindKernel locates the guest kernel: $LIBBOX_KERNEL (modules from
// $LIBBOX_KERNEL_MODULES), else the libbox kernel cache, else /boot.
func FindKernel() (Kernel, error) {
	if runtime.GOARCH != "amd64" && os.Getenv("LIBBOX_KERNEL") == "" {
		return Kernel{}, errdefs.New(errdefs.Unsupported, "the QEMU backend knows only amd64 kernels: set LIBBOX_KERNEL (and LIBBOX_KERNEL_MODULES) on %s", runtime.GOARCH)
	}
	if k := os.Getenv("LIBBOX_KERNEL"); k != "" {
		if _, err := os.Stat(k); err != nil {
			return Kernel{}, errdefs.Wrap(errdefs.NotFound, err, "LIBBOX_KERNEL=%s", k)
		}
		m := os.Getenv("LIBBOX_KERNEL_MODULES")
		if m != "" {
			if _, err := os.Stat(m); err != nil {
				return Kernel{}, errdefs.Wrap(errdefs.NotFound, err, "LIBBOX_KERNEL_MODULES=%s", m)
			}
		}
		return Kernel{Image: k, Modules: m, Version: filepath.Base(m)}, nil
	}
	// Unpacked packages: <cache>/<version>/boot/vmlinuz-<version>.
	for _, c := range kernelCaches() {
		vers, _ := filepath.Glob(filepath.Join(c, "*", "boot", "vmlinuz-*"))
		if k, ok := newest(vers, func(img string) string { return filepath.Join(filepath.Dir(filepath.Dir(img)), "lib", "modules") }); ok {
			return k, nil
		}
	}
	imgs, _ := filepath.Glob("/boot/vmlinuz-*")
	if k, ok := newest(imgs, func(string) string { return "/lib/modules" }); ok {
		if f, err := os.Open(k.Image); err != nil {
			return Kernel{}, errdefs.Wrap(errdefs.FailedPrecondition, err, "kernel %s is not readable by this user: %s", k.Image, kernelHint)
		} else {
			f.Close()
		}
		return k, nil
	}
	return Kernel{}, errdefs.New(errdefs.NotFound, "no guest kernel found: %s", kernelHint)
}

// newest picks the highest version among vmlinuz-<version> paths whose
// modules dir (modRoot(img)/<version>) exists.
func newest(imgs []string, modRoot func(string) string) (Kernel, bool) {
	sort.Slice(imgs, func(i, j int) bool { return versionLess(imgs[j], imgs[i]) })
	for _, img := range imgs {
		ver := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		mods := filepath.Join(modRoot(img), ver)
		if st, err := os.Stat(mods); err == nil && st.IsDir() {
			return Kernel{Image: img, Modules: mods, Version: ver}, true
		}
	}
	return Kernel{}, false
}

// versionLess compares dotted/dashed versions number by number.
func versionLess(a, b string) bool {
	fa := strings.FieldsFunc(a, func(r rune) bool { return r == '.' || r == '-' })
	fb := strings.FieldsFunc(b, func(r rune) bool { return r == '.' || r == '-' })
	for i := 0; i < len(fa) && i < len(fb); i++ {
		if fa[i] == fb[i] {
			continue
		}
		var na, nb int
		_, ea := fmt.Sscanf(fa[i], "%d", &na)
		_, eb := fmt.Sscanf(fb[i], "%d", &nb)
		if ea == nil && eb == nil && na != nb {
			return na < nb
		}
		return fa[i] < fb[i]
	}
	return len(fa) < len(fb)
}
