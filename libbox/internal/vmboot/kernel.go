package vmboot

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

// KernelHint says how to get a guest kernel for the QEMU backend.
const KernelHint = "install one with `./build.sh deps` (downloads Debian's linux-image-cloud-amd64 into /var/cache/libbox/kernel), " +
	"`apt-get install linux-image-cloud-amd64`, or set LIBBOX_KERNEL=/path/to/vmlinuz (and LIBBOX_KERNEL_MODULES=/lib/modules/VERSION)"

// FindKernel locates the guest kernel: image (with its modules directory,
// which may be "") when the caller names one, else the kit shipped beside
// the loaded libbox.so (or the running binary), else the libbox kernel
// cache, else /boot.
func FindKernel(image, modules string) (Kernel, error) {
	if image != "" {
		return KernelAt(image, modules, KernelHint)
	}
	if runtime.GOARCH != "amd64" {
		return Kernel{}, errdefs.New(errdefs.Unsupported, "libbox finds only amd64 guest kernels by itself: set LIBBOX_KERNEL (and LIBBOX_KERNEL_MODULES) on %s", runtime.GOARCH)
	}
	// Kits and unpacked packages: <dir>/<version>/boot/vmlinuz-<version>.
	for _, c := range append(shippedKitDirs(), kernelCaches()...) {
		vers, _ := filepath.Glob(filepath.Join(c, "*", "boot", "vmlinuz-*"))
		if k, ok := newest(vers, func(img string) string { return filepath.Join(filepath.Dir(filepath.Dir(img)), "lib", "modules") }); ok {
			return k, nil
		}
	}
	imgs, _ := filepath.Glob("/boot/vmlinuz-*")
	if k, ok := newest(imgs, func(string) string { return "/lib/modules" }); ok {
		if f, err := os.Open(k.Image); err != nil {
			return Kernel{}, errdefs.Wrap(errdefs.FailedPrecondition, err, "kernel %s is not readable by this user: %s", k.Image, KernelHint)
		} else {
			f.Close()
		}
		return k, nil
	}
	return Kernel{}, errdefs.New(errdefs.NotFound, "no guest kernel found: %s", KernelHint)
}

// KernelAt checks a kernel the caller names (LIBBOX_KERNEL, and
// LIBBOX_KERNEL_MODULES, which may be ""): the image must be a file and the
// modules a directory. hint says what to do when they are not.
func KernelAt(image, modules, hint string) (Kernel, error) {
	st, err := os.Stat(image)
	if err != nil {
		return Kernel{}, errdefs.New(errdefs.NotFound, "guest kernel LIBBOX_KERNEL=%s: %v; %s", image, err, hint)
	}
	if !st.Mode().IsRegular() {
		return Kernel{}, errdefs.New(errdefs.InvalidArgument, "guest kernel LIBBOX_KERNEL=%s is not a file; %s", image, hint)
	}
	k := Kernel{Image: image}
	if modules != "" {
		if st, err := os.Stat(modules); err != nil || !st.IsDir() {
			return Kernel{}, errdefs.New(errdefs.NotFound, "kernel modules LIBBOX_KERNEL_MODULES=%s: not a directory; %s", modules, hint)
		}
		k.Modules, k.Version = modules, filepath.Base(modules)
	}
	return k, nil
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
