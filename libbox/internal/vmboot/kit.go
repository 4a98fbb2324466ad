package vmboot

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
)

// WriteKernelKit writes the guest kernel k as a kit libbox packages ship
// beside libbox.so: DST/<version>/boot/vmlinuz-<version> and, below
// DST/<version>/lib/modules/<version>, exactly the modules a box can load
// (guestModules and their dependencies, zstd-compressed) plus
// modules.builtin — the layout FindKernel searches. DST is replaced whole.
// It returns the total size of the kit in bytes.
func WriteKernelKit(k Kernel, dst string) (int64, error) {
	if k.Version == "" {
		return 0, fmt.Errorf("kernel kit: kernel %s has no version", k.Image)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dst), ".kit-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, k.Version)
	var total int64
	img, err := os.ReadFile(k.Image)
	if err != nil {
		return 0, err
	}
	if err := writeFile(filepath.Join(root, "boot", "vmlinuz-"+k.Version), img, &total); err != nil {
		return 0, err
	}
	if k.Modules != "" {
		mods, err := boxModules(k.Modules, false)
		if err != nil {
			return 0, err
		}
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
		if err != nil {
			return 0, err
		}
		defer enc.Close()
		modRoot := filepath.Join(root, "lib", "modules", k.Version)
		for _, m := range mods {
			if err := writeFile(filepath.Join(modRoot, m.path+".zst"), enc.EncodeAll(m.data, nil), &total); err != nil {
				return 0, err
			}
		}
		if b, err := os.ReadFile(filepath.Join(k.Modules, "modules.builtin")); err == nil {
			if err := writeFile(filepath.Join(modRoot, "modules.builtin"), b, &total); err != nil {
				return 0, err
			}
		}
	}
	if err := os.RemoveAll(dst); err != nil {
		return 0, err
	}
	return total, os.Rename(tmp, dst)
}

func writeFile(p string, data []byte, total *int64) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	*total += int64(len(data))
	return os.WriteFile(p, data, 0o644)
}
