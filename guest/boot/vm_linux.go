package boot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/guest/bootparam"
)

// deviceWait bounds how long boot waits for a device (disk, port) to appear
// after its driver was loaded.
const deviceWait = 20 * time.Second

// VM prepares the initramfs world of a micro-VM for the agent running as
// PID 1: pseudo filesystems, kernel modules, the root disk with its own
// pseudo filesystems, and the volumes. It returns where to listen and the
// root to spawn processes into.
func VM() (VMConfig, error) {
	var cfg VMConfig
	for _, m := range []mount{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"},
		{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	} {
		if err := m.do(""); err != nil {
			return cfg, err
		}
	}
	params, err := readCmdline("/proc/cmdline")
	if err != nil {
		return cfg, err
	}
	debug := func(format string, args ...any) {}
	if params[bootparam.ParamDebug] == "1" {
		t0 := time.Now()
		debug = func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "boot: +%s "+format+"\n", append([]any{time.Since(t0).Round(time.Millisecond)}, args...)...)
		}
	}
	var wanted []string
	if m := params[bootparam.ParamModules]; m != "" {
		wanted = strings.Split(m, ",")
	}
	debug("loading modules %v", wanted)
	if err := loadModules(bootparam.ModuleList, wanted, debug); err != nil {
		return cfg, err
	}
	if h := params[bootparam.ParamHostname]; h != "" {
		if err := unix.Sethostname([]byte(h)); err != nil {
			return cfg, fmt.Errorf("boot: sethostname %q: %w", h, err)
		}
		cfg.Hostname = h
	}
	ifUp("lo")

	cfg.Root = "/"
	if dev := params[bootparam.ParamRoot]; dev != "" {
		debug("mounting %s", dev)
		if err := mountRoot(dev, bootparam.VMRoot); err != nil {
			return cfg, err
		}
		cfg.Root = bootparam.VMRoot
	}
	if err := vmNet(params[bootparam.ParamNet], cfg.Root, debug); err != nil {
		return cfg, err
	}
	vols, err := bootparam.ParseVolumes(params[bootparam.ParamVolumes])
	if err != nil {
		return cfg, err
	}
	for _, v := range vols {
		if err := mountVolume(cfg.Root, v); err != nil {
			return cfg, err
		}
	}

	if p := params[bootparam.ParamVsock]; p != "" {
		cfg.Listen = "vsock:" + p
		return cfg, nil
	}
	name := params[bootparam.ParamPort]
	if name == "" {
		name = "org.libbox.agent"
	}
	debug("looking for port %s", name)
	dev, err := findPort("/sys/class/virtio-ports", name)
	if err != nil {
		return cfg, err
	}
	debug("serving on %s", dev)
	cfg.Listen = "serial:" + dev
	return cfg, nil
}

type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

// do mounts m below root ("" for /), creating the target.
func (m mount) do(root string) error {
	target := filepath.Join(root, m.target)
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("boot: mkdir %s: %w", target, err)
	}
	if err := unix.Mount(m.source, target, m.fstype, m.flags, m.data); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil // already mounted (a restarted agent)
		}
		return fmt.Errorf("boot: mount %s on %s: %w", m.fstype, target, err)
	}
	return nil
}

// readCmdline returns the key=value words of the kernel command line whose
// key starts with "libbox.".
func readCmdline(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("boot: %w", err)
	}
	return bootparam.ParseCmdline(string(b)), nil
}

// vmNet configures a VM's interface from the libbox.net parameter (empty:
// no network) and points the box's resolver at the gateway. The driver
// registers the device asynchronously after its module loads: wait for it.
func vmNet(param, root string, debug func(string, ...any)) error {
	if param == "" {
		return nil
	}
	n, err := bootparam.ParseNet(param)
	if err != nil {
		return err
	}
	if err := waitPath("/sys/class/net/"+boxIface, deviceWait); err != nil {
		return err
	}
	debug("configuring %s: %s via %s", boxIface, n.Address, n.Gateway)
	if err := configureLink(boxIface, n); err != nil {
		return fmt.Errorf("boot: network: %w", err)
	}
	return writeResolv(root, &n)
}

// loadModules loads modules from the list file: one "NAME PATH DEPS"
// line per module (DEPS comma-separated or "-"), dependencies first. With
// wanted non-empty only those modules and their dependencies are loaded.
// A module already loaded (or built in) is fine; a list that does not
// exist means the kernel needs no modules.
func loadModules(list string, wanted []string, debug func(string, ...any)) error {
	b, err := os.ReadFile(list)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	type mod struct{ path, deps string }
	mods := map[string]mod{}
	var order []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || strings.HasPrefix(f[0], "#") {
			continue
		}
		mods[f[0]] = mod{f[1], f[2]}
		order = append(order, f[0])
	}
	need := map[string]bool{}
	var mark func(string)
	mark = func(n string) {
		m, ok := mods[n]
		if !ok || need[n] {
			return
		}
		need[n] = true
		for _, d := range strings.Split(m.deps, ",") {
			mark(d)
		}
	}
	for _, w := range wanted {
		mark(w)
	}
	for _, n := range order {
		if len(wanted) > 0 && !need[n] {
			continue
		}
		start := time.Now()
		if err := loadModule(mods[n].path); err != nil {
			return err
		}
		debug("module %s loaded in %s", n, time.Since(start).Round(time.Millisecond))
	}
	return nil
}

func loadModule(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("boot: module %s: %w", path, err)
	}
	defer unix.Close(fd)
	err = unix.FinitModule(fd, "", 0)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("boot: load module %s: %w (a dependency missing from %s?)", path, err, bootparam.ModuleList)
	}
	return nil
}

// waitPath waits until path exists.
func waitPath(path string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("boot: %s did not appear within %s: is the device attached and its driver in %s?", path, d, bootparam.ModuleList)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// mountRoot mounts the ext4 root disk at target and the pseudo
// filesystems processes expect inside it.
func mountRoot(dev, target string) error {
	if err := waitPath(dev, deviceWait); err != nil {
		return err
	}
	if err := (mount{dev, target, "ext4", 0, ""}).do(""); err != nil {
		return err
	}
	for _, m := range []mount{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		// The agent allocates ptys from the initramfs /dev/pts: share it,
		// so tty names inside the root name the same devices.
		{"/dev/pts", "/dev/pts", "", unix.MS_BIND, ""},
		{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	} {
		if err := m.do(target); err != nil {
			return err
		}
	}
	return nil
}

// mountVolume mounts a virtiofs volume at its path inside root.
func mountVolume(root string, v bootparam.Volume) error {
	var flags uintptr = unix.MS_NOSUID | unix.MS_NODEV
	if v.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	if err := mountAt(root, v.BoxPath, createDir, v.Tag, "virtiofs", flags, ""); err != nil {
		return fmt.Errorf("boot: volume %s on %s: %w", v.Tag, v.BoxPath, err)
	}
	return nil
}

// findPort returns the device of the virtio-serial port called name,
// waiting for it to appear.
func findPort(classDir, name string) (string, error) {
	deadline := time.Now().Add(deviceWait)
	for {
		ents, _ := os.ReadDir(classDir)
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(classDir, e.Name(), "name"))
			if err == nil && strings.TrimSpace(string(b)) == name {
				dev := "/dev/" + e.Name()
				if err := waitPath(dev, deviceWait); err != nil {
					return "", err
				}
				return dev, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("boot: no virtio-serial port named %q in %s after %s: is virtio_console in %s and the port attached?", name, classDir, deviceWait, bootparam.ModuleList)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ifUp brings a network interface up (best effort: the loopback device is
// all a box without a NIC has).
func ifUp(name string) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	_ = unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}
