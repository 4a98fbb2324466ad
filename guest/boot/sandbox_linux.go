package boot

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/guest/bootparam"
	"github.com/libbox/libbox/guest/seccomp"
)

// Sandbox sets up the box's root as PID 1 of new namespaces: overlay root,
// /proc, a minimal /dev, volumes, the /proc and /sys masks, pivot_root,
// hostname, lo up; no_new_privs and a reduced capability bounding set.
//
// Steps run in order; a new step goes where its mounts must exist (before
// "mask /proc and /sys" if it writes a sysctl, before "pivot_root" if it
// needs a host path).
func Sandbox(specPath string) (SandboxConfig, error) {
	b, err := readSpec(specPath)
	if err != nil {
		return SandboxConfig{}, err
	}
	var s bootparam.SandboxSpec
	if err := json.Unmarshal(b, &s); err != nil {
		return SandboxConfig{}, fmt.Errorf("sandbox spec %s: %w", specPath, err)
	}
	for _, fd := range s.CloseFDs {
		unix.Close(fd)
	}
	if err := hello(&s); err != nil {
		return SandboxConfig{}, err
	}
	// Started through an fd ("/proc/self/fd/N"), the process is named "N".
	_ = os.WriteFile("/proc/self/comm", []byte("box-agent"), 0)
	b2 := &sandboxBoot{}
	steps := []struct {
		name string
		fn   func(*bootparam.SandboxSpec) error
	}{
		{"make mounts private", func(*bootparam.SandboxSpec) error { return unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "") }},
		{"wait for host mounts", b2.handshake},
		{"mount overlay root", b2.mountOverlay},
		{"mount /proc", func(s *bootparam.SandboxSpec) error {
			return mountIn(s.Rootfs, "proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		}},
		{"mount /sys", func(s *bootparam.SandboxSpec) error {
			err := mountIn(s.Rootfs, "sysfs", "/sys", "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC|unix.MS_RDONLY, "")
			if err != nil && s.UserNS {
				return nil // not permitted in some user namespaces; /sys stays empty
			}
			return err
		}},
		{"populate /dev", populateDev},
		{"mount /run", func(s *bootparam.SandboxSpec) error {
			return mountIn(s.Rootfs, "tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755")
		}},
		{"mount volumes", b2.mountVolumes},
		{"attach network", sandboxNet},
		{"mask /proc and /sys", maskPaths},
		{"pivot_root", pivot},
		{"set hostname", func(s *bootparam.SandboxSpec) error {
			if s.Hostname == "" {
				return nil
			}
			return unix.Sethostname([]byte(s.Hostname))
		}},
		{"bring up lo", func(*bootparam.SandboxSpec) error { return loUp() }},
		{"write resolv.conf", func(s *bootparam.SandboxSpec) error { return writeResolv("/", s.Net) }},
	}
	for _, st := range steps {
		if err := st.fn(&s); err != nil {
			return SandboxConfig{}, fmt.Errorf("%s: %w", st.name, err)
		}
	}
	cfg := SandboxConfig{Listen: s.Listen, Hostname: s.Hostname, SpawnSetup: func() error { return dropPrivileges(&s) }}
	if s.PidsGroupFD > 0 {
		// Only the spawn thread joins the box's pids group (it runs
		// SpawnSetup), so only what it forks is counted there: the agent's
		// other threads are outside the box's budget.
		unix.CloseOnExec(s.PidsGroupFD)
		cfg.SpawnSetup = func() error {
			if err := joinGroup(s.PidsGroupFD); err != nil {
				return err
			}
			return dropPrivileges(&s)
		}
	}
	if s.PidsLimit > 0 {
		// Process-wide and inherited; counted per uid in this user namespace.
		lim := unix.Rlimit{Cur: uint64(s.PidsLimit), Max: uint64(s.PidsLimit)}
		if err := unix.Setrlimit(unix.RLIMIT_NPROC, &lim); err != nil {
			return SandboxConfig{}, fmt.Errorf("pids limit: %w", err)
		}
		// The agent shares the box's pids budget: a fork bomb in the box
		// must not leave it unable to make a thread (the Go runtime dies
		// then), so it makes its threads before the box's first process
		// exists and keeps them idle. That takes a while: it runs while
		// the agent starts serving, and the first spawn waits for it.
		gate := make(chan error, 1)
		go func() {
			err := reserveThreads(reservedThreads)
			if err != nil {
				err = fmt.Errorf("reserve threads: %w", err)
			}
			gate <- err
		}()
		cfg.SpawnGate = gate
	}
	return cfg, nil
}

// joinGroup moves the calling thread into the cgroup whose tasks file is
// fd, then closes fd.
func joinGroup(fd int) error {
	_, err := unix.Write(fd, []byte("0"))
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("join the box's pids group: %w", err)
	}
	return nil
}

// reservedThreads is how many OS threads the agent makes at boot; it only
// needs new ones beyond that many concurrently blocked calls.
const reservedThreads = 48

// reserveThreads blocks n goroutines in a system call at once, so the Go
// runtime starts an OS thread for each; they stay idle for later use.
func reserveThreads(n int) error {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return err
	}
	defer unix.Close(p[0])
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b [1]byte
			_, _ = unix.Read(p[0], b[:]) // blocks until the write end closes
		}()
	}
	time.Sleep(20 * time.Millisecond) // let them all block
	unix.Close(p[1])
	wg.Wait()
	return nil
}

// readSpec reads the spec from a path or from an inherited fd ("fd:N",
// which it closes): the host's file need not be readable by the box's ids.
func readSpec(p string) ([]byte, error) {
	n, ok := strings.CutPrefix(p, "fd:")
	if !ok {
		return os.ReadFile(p)
	}
	fd, err := strconv.Atoi(n)
	if err != nil || fd < 0 {
		return nil, fmt.Errorf("sandbox spec %q: bad fd", p)
	}
	f := os.NewFile(uintptr(fd), "sandbox spec")
	defer f.Close()
	return io.ReadAll(f)
}

// hello tells the host which launch protocol this agent speaks (see
// bootparam.LaunchProtocol) and refuses a host that speaks another one. The
// host reads it once it has done its part, so it costs no round trip.
func hello(s *bootparam.SandboxSpec) error {
	if s.BootSocket >= 0 {
		// An older host may have closed its end: it checks nothing then.
		_ = unix.Sendmsg(s.BootSocket, bootparam.Hello(bootparam.LaunchProtocol), nil, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
	}
	if s.Protocol != bootparam.LaunchProtocol {
		return fmt.Errorf("this box agent speaks launch protocol %d, the host library %s: rebuild both from one source (./build.sh build)",
			bootparam.LaunchProtocol, hostProtocol(s.Protocol))
	}
	return nil
}

func hostProtocol(v int) string {
	if v == 0 {
		return "states none (it is older)"
	}
	return fmt.Sprintf("speaks %d", v)
}

// sandboxBoot holds what the steps share.
type sandboxBoot struct {
	hostMounts map[string]bool // names of the mounts the host attached
}

// handshake waits for the host to attach its mounts (see
// bootparam.SandboxSpec.BootSocket); the host starts on them as soon as
// the agent exists, so they are usually there by now.
func (b *sandboxBoot) handshake(s *bootparam.SandboxSpec) error {
	if s.BootSocket < 0 {
		return nil
	}
	defer unix.Close(s.BootSocket)
	if len(s.HostMounts) == 0 {
		return nil
	}
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(s.BootSocket, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("the host did not attach the mounts")
	}
	// The box dir, opened in this namespace: relative paths start there.
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return fmt.Errorf("no box dir from the host (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return fmt.Errorf("no box dir from the host (%v)", err)
	}
	err = unix.Fchdir(fds[0]) // once, at boot, before any request
	unix.Close(fds[0])
	if err != nil {
		return err
	}
	b.hostMounts = map[string]bool{}
	for _, m := range s.HostMounts {
		b.hostMounts[m] = true
	}
	return nil
}

func (b *sandboxBoot) mountOverlay(s *bootparam.SandboxSpec) error {
	for _, d := range []string{s.Upper, s.Work, s.Rootfs, s.Lower} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	lower := strings.Join(append(append([]string{}, s.Layers...), s.Lower), ":")
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, s.Upper, s.Work)
	if s.UserNS {
		opts += ",userxattr"
	}
	return unix.Mount("overlay", s.Rootfs, "overlay", 0, opts)
}

// mountIn mounts onto a directory under root, creating it; target is
// resolved inside root (see inRoot).
func mountIn(root, source, target, fstype string, flags uintptr, data string) error {
	return mountAt(root, target, createDir, source, fstype, flags, data)
}

func populateDev(s *bootparam.SandboxSpec) error {
	if err := mountIn(s.Rootfs, "tmpfs", "/dev", "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755,size=65536k"); err != nil {
		return err
	}
	// The new tmpfs, wherever /dev resolved to: everything below is made
	// relative to it, so no name of the image is looked up again.
	dev, err := inRoot(s.Rootfs, "/dev", noCreate)
	if err != nil {
		return err
	}
	defer unix.Close(dev)
	for _, name := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		fd, err := unix.Openat(dev, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o666)
		if err != nil {
			return fmt.Errorf("/dev/%s: %w", name, err)
		}
		err = unix.Mount("/dev/"+name, fdPath(fd), "", unix.MS_BIND, "")
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("bind /dev/%s: %w", name, err)
		}
	}
	if err := mountIn(s.Rootfs, "devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620"); err != nil {
		return err
	}
	if err := mountIn(s.Rootfs, "shm", "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777,size=65536k"); err != nil {
		return err
	}
	links := map[string]string{
		"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
	}
	for name, target := range links {
		if err := unix.Symlinkat(target, dev, name); err != nil {
			return fmt.Errorf("/dev/%s: %w", name, err)
		}
	}
	return nil
}

func (b *sandboxBoot) mountVolumes(s *bootparam.SandboxSpec) error {
	for i, v := range s.Volumes {
		name := fmt.Sprintf("volume.%d", i)
		src := v.Host
		if b.hostMounts[name] {
			src = name // id-mapped by the host, attached in the box dir
		}
		fi, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("volume %s: %w", v.Host, err)
		}
		kind := createDir
		if !fi.IsDir() {
			kind = createFile
		}
		if err := mountAt(s.Rootfs, v.Box, kind, src, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("volume %s on %s: %w", v.Host, v.Box, err)
		}
		if err := readOnly(s.Rootfs, v); err != nil {
			return err
		}
	}
	return nil
}

// readOnly makes a volume's mount (and every mount below it) read-only.
func readOnly(root string, v bootparam.SandboxVolume) error {
	if !v.ReadOnly {
		return nil
	}
	fd, err := inRoot(root, v.Box, noCreate) // now the volume's own root
	if err != nil {
		return fmt.Errorf("read-only %s: %w", v.Box, err)
	}
	defer unix.Close(fd)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return fmt.Errorf("read-only %s: %w", v.Box, err)
	}
	return nil
}

// The kernel interfaces a box must not change or read, as Docker's default
// masked and read-only paths (the floor): read-only ones are bound onto
// themselves read-only, masked files get /dev/null bound over them, masked
// directories an empty read-only tmpfs.
var (
	readOnlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
	maskedPaths   = []string{
		"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/sched_debug", "/proc/scsi", "/proc/timer_list", "/proc/timer_stats",
		"/sys/devices/virtual/powercap", "/sys/firmware",
	}
)

func maskPaths(s *bootparam.SandboxSpec) error {
	const locked = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	for _, p := range readOnlyPaths {
		err := withIn(s.Rootfs, p, func(dst string) error {
			if err := unix.Mount(dst, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("bind %s: %w", p, err)
			}
			return nil
		})
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return err
		}
		// Reopened: the bind mount itself, not the directory below it.
		err = withIn(s.Rootfs, p, func(dst string) error {
			return unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|locked, "")
		})
		if err != nil {
			return fmt.Errorf("read-only %s: %w", p, err)
		}
	}
	for _, p := range maskedPaths {
		err := withIn(s.Rootfs, p, func(dst string) error {
			var st unix.Stat_t
			if err := unix.Stat(dst, &st); err != nil {
				return err
			}
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				return unix.Mount("tmpfs", dst, "tmpfs", unix.MS_RDONLY|locked, "size=0,mode=555")
			}
			return unix.Mount("/dev/null", dst, "", unix.MS_BIND, "")
		})
		if errors.Is(err, unix.ENOENT) {
			continue // absent on this kernel (or /sys is not mounted)
		}
		if err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
	}
	return nil
}

// withIn calls fn with a path naming target inside root, resolved there.
func withIn(root, target string, fn func(string) error) error {
	fd, err := inRoot(root, target, noCreate)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return fn(fdPath(fd))
}

// pivot makes the box's root the root, with the old root stacked on it
// (pivot_root with the same new and put-old directory) and then detached:
// no directory for the old root is made in, or removed from, the box's
// writable layer.
func pivot(s *bootparam.SandboxSpec) error {
	// Runs once at boot, before any request: the only chdir of the agent.
	if err := unix.Chdir(s.Rootfs); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return err
	}
	// "." is now the old root, mounted on top of the new one.
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return err
	}
	return unix.Chdir("/")
}

func loUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// dropPrivileges sets no_new_privs, trims the capability bounding set and
// installs the seccomp filter on the calling thread (all three are
// per-thread attributes). It runs on the agent's spawn thread, the only
// thread that forks, so every process of the box inherits them while the
// agent keeps what it needs.
func dropPrivileges(s *bootparam.SandboxSpec) error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	keep := map[int]bool{}
	for _, c := range s.KeepCaps {
		keep[c] = true
	}
	last := lastCap()
	for c := 0; c <= last; c++ {
		if keep[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	return seccomp.Install()
}

func lastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return unix.CAP_LAST_CAP
	}
	n := 0
	for _, c := range b {
		if c >= '0' && c <= '9' {
			n = n*10 + int(c-'0')
		}
	}
	return n
}
