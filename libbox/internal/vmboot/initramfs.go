package vmboot

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/bootparam"
)

// initramfsFormat is bumped when the layout of the generated initramfs
// changes, so cached archives are rebuilt.
const initramfsFormat = "libbox-initramfs-2"

// ProbeMarker is what the probe initramfs prints before it powers off.
const ProbeMarker = "libbox-probe-ok"

// AgentInitramfs returns the cached initramfs for an agent binary and a
// kernel, building it when missing (cached by content under cacheDir): the
// agent as /init plus the kernel modules a box needs (guestModules) and
// their load order in bootparam.ModuleList.
func AgentInitramfs(cacheDir, agentPath string, k Kernel) (string, error) {
	agent, err := os.ReadFile(agentPath)
	if err != nil {
		return "", errdefs.Wrap(errdefs.NotFound, err, "box agent")
	}
	if !isStaticELF(agent) {
		return "", errdefs.New(errdefs.InvalidArgument, "box agent %s is not a static ELF binary: build it with CGO_ENABLED=0", agentPath)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n", initramfsFormat, k.Modules, k.Version)
	for _, m := range guestModules {
		fmt.Fprintf(h, "%s\n", m.name)
	}
	h.Write(agent)
	key := hex.EncodeToString(h.Sum(nil))[:24]
	out := filepath.Join(cacheDir, "initramfs", "agent-"+key+".cpio")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	var mods []*module
	if k.Modules != "" {
		if mods, err = boxModules(k.Modules, true); err != nil {
			return "", errdefs.Wrap(errdefs.FailedPrecondition, err, "kernel %s", k.Image)
		}
	}
	err = WriteAtomic(out, func(w io.Writer) error {
		c := newCPIO(w)
		dirs := newDirSet(c)
		for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "mnt", "mnt/root", "lib/modules"} {
			dirs.add(d)
		}
		c.CharDev("dev/console", 0o600, 5, 1)
		c.CharDev("dev/null", 0o666, 1, 3)
		var list strings.Builder
		for _, m := range mods {
			p := path.Join("lib/modules", k.Version, filepath.ToSlash(m.path))
			dirs.add(path.Dir(p))
			c.File(p, 0o644, m.data)
			deps := strings.Join(m.deps, ",")
			if deps == "" {
				deps = "-"
			}
			fmt.Fprintf(&list, "%s /%s %s\n", m.name, p, deps)
		}
		c.File(strings.TrimPrefix(bootparam.ModuleList, "/"), 0o644, []byte(list.String()))
		if err := c.File("init", 0o755, agent); err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		return "", errdefs.Wrap(errdefs.Internal, err, "writing initramfs")
	}
	return out, nil
}

// ProbeInitramfs returns a cached initramfs whose init prints ProbeMarker
// and powers off at once (accelerator probe, bare boot benchmark). It uses
// the host's static busybox.
func ProbeInitramfs(cacheDir string) (string, error) {
	bb, err := FindBusybox()
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		return "", errdefs.Wrap(errdefs.NotFound, err, "busybox")
	}
	script := "#!/bin/busybox sh\n/bin/busybox echo " + ProbeMarker + "\nexec /bin/busybox poweroff -f\n"
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", initramfsFormat, script)
	h.Write(data)
	out := filepath.Join(cacheDir, "initramfs", "probe-"+hex.EncodeToString(h.Sum(nil))[:24]+".cpio")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	err = WriteAtomic(out, func(w io.Writer) error {
		c := newCPIO(w)
		c.Dir("bin", 0o755)
		c.Dir("dev", 0o755)
		c.CharDev("dev/console", 0o600, 5, 1)
		c.File("bin/busybox", 0o755, data)
		c.File("init", 0o755, []byte(script))
		return c.Close()
	})
	if err != nil {
		return "", errdefs.Wrap(errdefs.Internal, err, "writing probe initramfs")
	}
	return out, nil
}

// FindBusybox returns a static busybox on the host.
func FindBusybox() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox", "/usr/lib/busybox/busybox"} {
		b, err := os.ReadFile(p)
		if err == nil && isStaticELF(b) {
			return p, nil
		}
	}
	return "", errdefs.New(errdefs.NotFound, "no static busybox found (needed for the VM accelerator probe): apt-get install busybox-static")
}

// isStaticELF reports whether b is an ELF executable without an
// interpreter (static, so it runs as /init of an initramfs).
func isStaticELF(b []byte) bool {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return f.Type == elf.ET_EXEC || f.Type == elf.ET_DYN
}

// dirSet emits each directory (and its parents) once.
type dirSet struct {
	c    *cpioWriter
	seen map[string]bool
}

func newDirSet(c *cpioWriter) *dirSet { return &dirSet{c: c, seen: map[string]bool{}} }

func (d *dirSet) add(p string) {
	if p == "." || p == "/" || p == "" || d.seen[p] {
		return
	}
	d.add(path.Dir(p))
	d.seen[p] = true
	d.c.Dir(p, 0o755)
}
