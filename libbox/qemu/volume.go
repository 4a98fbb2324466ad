//go:build linux

package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/internal/hostid"
	"github.com/libbox/libbox/libbox/internal/launch"
	"github.com/libbox/libbox/libbox/internal/vmboot"
)

// virtiofsdPaths are where Debian ships virtiofsd (QEMU 7.2's C daemon in
// qemu-system-common; the Rust one in package virtiofsd).
var virtiofsdPaths = []string{"/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd", "/usr/lib/virtiofsd"}

// helper is a host process serving a box (virtiofsd for a volume).
type helper struct {
	PID       int    `json:"pid"` // virtiofsd
	StartTime uint64 `json:"start_time"`
	Tag       string `json:"tag"`
	Info      string `json:"info,omitempty"` // box info: the volume, its ids
	p         *proc  // virtiofsd
	launched  *proc  // what the backend started (see volumeJail), nil after Attach
}

// kill ends the helper at once.
func (h helper) kill() {
	for _, p := range []*proc{h.p, h.launched} {
		if p != nil {
			p.kill()
		}
	}
}

// release stops watching the helper, which keeps running (detached).
func (h helper) release() {
	for _, p := range []*proc{h.p, h.launched} {
		if p != nil {
			p.release()
		}
	}
}

// volumesInfo is what box info says of the volumes' helpers.
func volumesInfo(hs []helper) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.Info)
	}
	return out
}

// startVolumes starts one virtiofsd per volume and returns the QEMU
// arguments that attach them (the i-th under vmboot.VolumeTag(i), as the
// kernel command line says). virtio-fs needs the
// guest memory shared with the daemon (a memfd backend).
func (b *Backend) startVolumes(ctx context.Context, spec backend.Spec, m machine, memMiB int) (hs []helper, args []string, err error) {
	if len(spec.Volumes) == 0 {
		return nil, nil, nil
	}
	daemon := ""
	for _, p := range virtiofsdPaths {
		if _, err := os.Stat(p); err == nil {
			daemon = p
			break
		}
	}
	if daemon == "" {
		return nil, nil, errdefs.New(errdefs.Unsupported, "VM volumes need virtiofsd: apt-get install qemu-system-common (or virtiofsd)")
	}
	if os.Geteuid() != 0 {
		return nil, nil, errdefs.New(errdefs.Unsupported, "VM volumes need root (virtiofsd sandboxes itself with namespaces): run as root or use isolation=sandbox")
	}
	unshare, err := vmboot.LookTool("unshare", "util-linux")
	if err != nil {
		return nil, nil, err
	}
	vj, err := newVolumeJail(spec.Dir)
	if err != nil {
		return nil, nil, err
	}
	defer vj.close() // the helpers are in the user namespace once started
	defer func() {
		if err != nil {
			stopHelpers(hs)
		}
	}()
	args = []string{"-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", memMiB), "-machine", "memory-backend=mem"}
	for n, v := range spec.Volumes {
		if !filepath.IsAbs(v.HostPath) || !filepath.IsAbs(v.BoxPath) {
			return hs, nil, errdefs.New(errdefs.InvalidArgument, "volume %s:%s: paths must be absolute", v.HostPath, v.BoxPath)
		}
		if st, err := os.Stat(v.HostPath); err != nil || !st.IsDir() {
			return hs, nil, errdefs.New(errdefs.NotFound, "volume %s: not a directory on the host", v.HostPath)
		}
		tag := vmboot.VolumeTag(n)
		sock := filepath.Join(spec.Dir, "fs"+strconv.Itoa(n)+".sock")
		h, err := vj.start(ctx, unshare, daemon, v, sock, filepath.Join(spec.Dir, "fs"+strconv.Itoa(n)+".log"), spec.Detach)
		if h.launched != nil {
			h.Tag = tag
			hs = append(hs, h)
		}
		if err != nil {
			return hs, nil, err
		}
		args = append(args,
			"-chardev", "socket,id="+tag+",path="+qemuPath(sock),
			"-device", m.device("vhost-user-fs")+",chardev="+tag+",tag="+tag)
	}
	return hs, args, nil
}

// On a root host a volume's virtiofsd runs as the box's slice of host ids
// (libbox/internal/hostid), not as root, so that a guest which breaks it
// is an unprivileged host uid that reaches the volume only:
//
//   - a user namespace U maps ids 0..65535 onto the slice, as a sandbox
//     box's does (newUserns);
//   - the volume is an id-mapped bind mount through U (read-only for a
//     read-only volume), attached by the host over /tmp in a mount
//     namespace of its own (volumeMount); that mount namespace belongs to the
//     host's user namespace, so virtiofsd, which is root in U only, can
//     neither remount it read-write nor mount anything;
//   - virtiofsd enters U as its root (nsenter), so it holds its
//     capabilities (DAC_OVERRIDE, FOWNER, CHOWN, SETUID and SETGID for the
//     guest's credentials, ...) over files whose owners U maps only;
//     sandbox=chroot confines it to the volume, with its own seccomp filter
//     and capability drop;
//   - the vhost-user socket is made by the host in the box dir and handed
//     to virtiofsd as a listening fd (--fd): virtiofsd needs no writable
//     place on the host, and QEMU connects to it before it drops to the
//     box uid.
//
// Through the id-mapped mount, a file owned by host uid N (0..65535) is
// the guest's uid N, and what guest uid N writes is owned by host uid N:
// guest root writes files owned by host root, as in a sandbox box's
// volume. Host ids above 65535 are the guest's nobody, and even guest
// root cannot change those files. A filesystem that cannot be id-mapped is
// bound as it is: its files are then nobody's for virtiofsd, and box info
// says so.
//
// A credential change clears the parent-death signal, so, as for QEMU,
// virtiofsd runs under "unshare --pid --fork --kill-child sh", whose init
// dies with the host process and takes virtiofsd with it.
type volumeJail struct {
	slice   hostid.Slice
	userns  *os.File // U, held open while the helpers enter it
	nsenter string
}

func newVolumeJail(dir string) (*volumeJail, error) {
	sl, _, err := hostid.Alloc(dir)
	if err != nil {
		return nil, err
	}
	nsenter, err := vmboot.LookTool("nsenter", "util-linux")
	if err != nil {
		return nil, err
	}
	ns, err := newUserns(sl)
	if err != nil {
		return nil, err
	}
	return &volumeJail{slice: sl, userns: ns, nsenter: nsenter}, nil
}

func (vj *volumeJail) close() {
	if vj != nil {
		vj.userns.Close()
	}
}

// newUserns makes a user namespace whose ids 0..SliceSize-1 are the
// slice's host ids, held by the returned file.
func newUserns(sl hostid.Slice) (*os.File, error) {
	cat, err := exec.LookPath("cat")
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Unavailable, err, "virtiofsd user namespace")
	}
	cmd := exec.Command(cat)
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "virtiofsd user namespace")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(sl.UID), Size: hostid.SliceSize}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(sl.GID), Size: hostid.SliceSize}},
		GidMappingsEnableSetgroups: true,
	}
	if err := cmd.Start(); err != nil {
		in.Close()
		return nil, errdefs.Wrap(errdefs.Unsupported, err, "virtiofsd user namespace: this kernel does not let root make user namespaces")
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid))
	in.Close()
	_ = cmd.Wait()
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "virtiofsd user namespace")
	}
	return f, nil
}

// volumeTree clones the mount tree of a volume, detached, id-mapped
// through userns and read-only when ro; when the filesystem cannot be
// id-mapped, it is cloned as it is and mapErr says why.
func volumeTree(path string, userns int, ro bool) (fd int, mapErr, err error) {
	fd, err = unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return -1, nil, errdefs.Wrap(errdefs.FailedPrecondition, err, "volume %s: clone its mount", path)
	}
	var rdonly uint64
	if ro {
		rdonly = unix.MOUNT_ATTR_RDONLY
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP | rdonly, Userns_fd: uint64(userns)}
	if mapErr = unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); mapErr == nil || !ro {
		return fd, mapErr, nil
	}
	attr = unix.MountAttr{Attr_set: rdonly}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		unix.Close(fd)
		return -1, nil, errdefs.Wrap(errdefs.Internal, err, "volume %s: make it read-only", path)
	}
	return fd, mapErr, nil
}

// listenUnix makes the listening vhost-user socket at path.
func listenUnix(path string) (*os.File, error) {
	_ = os.Remove(path)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "virtiofsd socket")
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, errdefs.Wrap(errdefs.InvalidArgument, err, "virtiofsd socket %s", path)
	}
	if err := unix.Listen(fd, 1); err != nil {
		unix.Close(fd)
		return nil, errdefs.Wrap(errdefs.Internal, err, "virtiofsd socket")
	}
	return os.NewFile(uintptr(fd), path), nil
}

// volumeMount is where a volume is attached in its virtiofsd's mount
// namespace: a directory every host has, right under /, so that the
// volume's own parent dirs need not be open to the box uid.
const volumeMount = "/tmp"

// virtiofsdReady is what virtiofsd logs once it waits for QEMU.
const virtiofsdReady = "Waiting for vhost-user socket connection"

// start starts virtiofsd for volume v, serving it on sock.
func (vj *volumeJail) start(ctx context.Context, unshare, daemon string, v backend.Volume, sock, logPath string, detach bool) (h helper, err error) {
	tree, mapErr, err := volumeTree(v.HostPath, int(vj.userns.Fd()), v.ReadOnly)
	if err != nil {
		return h, err
	}
	defer unix.Close(tree)
	lsock, err := listenUnix(sock)
	if err != nil {
		return h, err
	}
	defer lsock.Close()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return h, errdefs.Wrap(errdefs.Internal, err, "virtiofsd start")
	}
	ours, theirs := os.NewFile(uintptr(sp[0]), "virtiofsd-sync"), os.NewFile(uintptr(sp[1]), "virtiofsd-sync")
	defer ours.Close()
	nofile := uint64(1000000)
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil {
		nofile = min(nofile, rl.Max) // the most it may raise itself to without privilege
	}
	// sh (fd 3: the sync socket, fd 4: the listening socket) says it runs,
	// waits for its volume mount, then runs virtiofsd under nsenter.
	script := `echo r >&3; read -r go <&3 || exit 1; exec 3<&-; "$@" & wait $!`
	cmd := []string{"--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--", "/bin/sh", "-c", script, "sh",
		vj.nsenter, fmt.Sprintf("--user=/proc/%d/fd/%d", os.Getpid(), vj.userns.Fd()), "--setuid", "0", "--setgid", "0", "--",
		daemon, "--fd=4", "--rlimit-nofile=" + strconv.FormatUint(nofile, 10),
		"-o", "source=" + volumeMount, "-o", "cache=auto", "-o", "sandbox=chroot"}
	p, err := spawn(unshare, cmd, logPath, detach, theirs, lsock)
	theirs.Close()
	if err != nil {
		return h, err
	}
	h.launched = p
	fail := func(err error, what string) (helper, error) {
		return h, errdefs.Wrap(errdefs.CodeOf(err), err, "virtiofsd for %s: %s: %s", v.HostPath, what, oneLine(readTail(logPath, 1024)))
	}
	if err := waitByte(ctx, int(ours.Fd())); err != nil {
		return fail(errdefs.Wrap(errdefs.Unavailable, err, "its launcher"), "start")
	}
	sh := childPID(p.pid)
	if sh == 0 {
		return fail(errdefs.New(errdefs.Unavailable, "no pid namespace init under %d", p.pid), "start")
	}
	// Attached in sh's mount namespace, where virtiofsd will serve it.
	err = launch.InNamespace(sh, "mnt", func() error {
		return unix.MoveMount(tree, "", unix.AT_FDCWD, volumeMount, unix.MOVE_MOUNT_F_EMPTY_PATH)
	})
	if err != nil {
		return fail(errdefs.Wrap(errdefs.Internal, err, "attach"), "volume mount")
	}
	if _, err := ours.Write([]byte("g\n")); err != nil {
		return fail(errdefs.Wrap(errdefs.Unavailable, err, "its launcher"), "start")
	}
	pid, err := waitVirtiofsd(ctx, p, sh, logPath)
	if err != nil {
		return fail(err, "start")
	}
	st, err := backend.ProcStartTime(pid)
	if err == nil {
		h.p, err = watch(pid, st, false)
	}
	if err != nil {
		return fail(errdefs.Wrap(errdefs.Unavailable, err, "pid %d", pid), "start")
	}
	h.PID, h.StartTime = pid, st
	ro := "read-write"
	if v.ReadOnly {
		ro = "read-only"
	}
	h.Info = fmt.Sprintf("%s -> %s (%s): virtiofsd pid %d as uid %d gid %d, root of a user namespace mapping ids 0..%d to host %d.. (slice %d of the %s), chroot into the volume, ",
		v.HostPath, v.BoxPath, ro, pid, vj.slice.UID, vj.slice.GID, hostid.SliceSize-1, vj.slice.UID, vj.slice.Index, vj.slice.Source)
	if mapErr == nil {
		h.Info += "id-mapped (host uid N is guest uid N for N < 65536)"
	} else {
		h.Info += fmt.Sprintf("not id-mapped (%v): the host's files are nobody's to the guest, which can write only what anyone may", mapErr)
	}
	return h, nil
}

// waitVirtiofsd waits until virtiofsd, the child of sh (the init of its
// pid namespace, under the launched p), waits for QEMU, and returns its
// pid.
func waitVirtiofsd(ctx context.Context, p *proc, sh int, logPath string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, startWait)
	defer cancel()
	for {
		if pid := childPID(sh); pid > 0 && strings.Contains(readTail(logPath, 4096), virtiofsdReady) {
			return pid, nil
		}
		if p.exited() {
			return 0, errdefs.New(errdefs.Unavailable, "it exited (%s)", p.exitString())
		}
		if err := vmboot.SleepCtx(ctx, 5*time.Millisecond); err != nil {
			return 0, errdefs.Wrap(errdefs.CodeOf(err), err, "waiting for it")
		}
	}
}

// waitByte reads one byte from fd (a blocking socket), bounded by ctx.
func waitByte(ctx context.Context, fd int) error {
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 50)
		if err != nil && err != unix.EINTR {
			return err
		}
		if n > 0 {
			break
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	buf := make([]byte, 1)
	if n, err := unix.Read(fd, buf); err != nil || n != 1 {
		return fmt.Errorf("it exited (read: %d, %v)", n, err)
	}
	return nil
}

// stopHelpers kills the helpers and waits (bounded) for them.
func stopHelpers(hs []helper) {
	for _, h := range hs {
		h.kill()
	}
	t := time.NewTimer(killTimeout)
	defer t.Stop()
	for _, h := range hs {
		for _, p := range []*proc{h.p, h.launched} {
			if p == nil {
				continue
			}
			select {
			case <-p.done:
			case <-t.C:
				return
			}
		}
	}
}
