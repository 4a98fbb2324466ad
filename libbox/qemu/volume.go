//go:build linux

package qemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/internal/vmboot"
)

// virtiofsdPaths are where Debian ships virtiofsd (QEMU 7.2's C daemon in
// qemu-system-common; the Rust one in package virtiofsd).
var virtiofsdPaths = []string{"/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd", "/usr/lib/virtiofsd"}

// helper is a host process serving a box (virtiofsd for a volume).
type helper struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
	Tag       string `json:"tag"`
	p         *proc
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
		_ = os.Remove(sock)
		// virtiofsd runs in its own mount namespace; a read-only volume is
		// a read-only bind mount there, so the guest cannot write it even
		// by remounting.
		script := `set -e; if [ "$1" = ro ]; then mount --bind "$2" "$2"; mount -o remount,bind,ro "$2"; fi; shift 2; exec "$@"`
		ro := "rw"
		if v.ReadOnly {
			ro = "ro"
		}
		cmd := []string{"--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh", ro, v.HostPath,
			daemon, "--socket-path=" + sock, "-o", "source=" + v.HostPath, "-o", "cache=auto", "-o", "sandbox=chroot"}
		p, err := launch(unshare, cmd, filepath.Join(spec.Dir, "fs"+strconv.Itoa(n)+".log"), spec.Detach)
		if err != nil {
			return hs, nil, err
		}
		hs = append(hs, helper{PID: p.pid, StartTime: p.startTime, Tag: tag, p: p})
		if err := waitSocket(ctx, sock, p); err != nil {
			return hs, nil, errdefs.Wrap(errdefs.Unavailable, err, "virtiofsd for %s: %s", v.HostPath, oneLine(readTail(filepath.Join(spec.Dir, "fs"+strconv.Itoa(n)+".log"), 1024)))
		}
		args = append(args,
			"-chardev", "socket,id="+tag+",path="+qemuPath(sock),
			"-device", m.device("vhost-user-fs")+",chardev="+tag+",tag="+tag)
	}
	return hs, args, nil
}

// waitSocket waits for a helper to create its socket.
func waitSocket(ctx context.Context, sock string, p *proc) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		if _, err := os.Stat(sock); err == nil {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("it exited (%s)", p.exitString())
		}
		if err := vmboot.SleepCtx(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
}

// stopHelpers kills the helpers and waits (bounded) for them.
func stopHelpers(hs []helper) {
	for _, h := range hs {
		if h.p != nil {
			h.p.kill()
		}
	}
	t := time.NewTimer(killTimeout)
	defer t.Stop()
	for _, h := range hs {
		if h.p == nil {
			continue
		}
		select {
		case <-h.p.done:
		case <-t.C:
			return
		}
	}
}
