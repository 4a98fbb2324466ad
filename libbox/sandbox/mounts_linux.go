package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/bootparam"
	"github.com/libbox/libbox/libbox/internal/launch"
)

// hostIDs is the host id range box ids 0..size-1 map to.
type hostIDs struct {
	uid, gid, size uint32
	desc           string
}

// openFiles owns the fds Start opens; close releases them all.
type openFiles struct{ fds []int }

func (o *openFiles) open(path string, flags int) (int, error) {
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
	if err == nil {
		o.fds = append(o.fds, fd)
	}
	return fd, err
}

// memfd returns an fd of an in-memory file holding data, at offset 0.
func (o *openFiles) memfd(name string, data []byte) (int, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return -1, err
	}
	o.fds = append(o.fds, fd)
	for off := 0; off < len(data); {
		n, err := unix.Pwrite(fd, data[off:], int64(off))
		if err != nil {
			return -1, err
		}
		off += n
	}
	return fd, nil
}

// closeFD closes fd, one of o's, now.
func (o *openFiles) closeFD(fd int) {
	if i := slices.Index(o.fds, fd); i >= 0 {
		o.fds = slices.Delete(o.fds, i, i+1)
		unix.Close(fd)
	}
}

func (o *openFiles) close() {
	for _, fd := range o.fds {
		unix.Close(fd)
	}
	o.fds = nil
}

// idMappedTree clones the mount tree at path, detached, id-mapped through
// the user namespace usernsFD: a file owned by host id N appears to the
// box as its id N (host id base+N), and what the box creates as its id N is
// stored as N.
func idMappedTree(path string, usernsFD int) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return -1, fmt.Errorf("clone mount %s: %w", path, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(usernsFD)}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("id-map %s: %w", path, err)
	}
	return fd, nil
}

// hostMount is one detached mount to attach in the agent's namespace.
type hostMount struct {
	name   string // bootparam.SandboxSpec.HostMounts name: the target in the box dir
	source string // host path
	image  bool   // the image: must be id-mapped
	box    string // box path, for messages
}

// helloTimeout bounds the wait for the agent's Hello (an agent that is
// neither gone nor saying anything is not one of this library's).
const helloTimeout = 2 * time.Minute

// readHello reads the agent's first message on the boot socket (see
// bootparam.SandboxSpec.BootSocket), waiting at most timeout and as long
// as ctx lasts; nil: the agent closed its end without one.
func readHello(ctx context.Context, sock *os.File, timeout time.Duration) ([]byte, error) {
	dl := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	if err := sock.SetReadDeadline(dl); err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "boot socket")
	}
	stop := context.AfterFunc(ctx, func() { _ = sock.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 128)
	n, err := sock.Read(buf)
	switch {
	case err == nil:
		return buf[:n], nil
	case errors.Is(err, io.EOF), errors.Is(err, unix.ECONNRESET):
		return nil, nil // ECONNRESET: it closed its end with the host's message unread
	case ctx.Err() != nil:
		return nil, errdefs.Wrap(errdefs.CodeOf(ctx.Err()), ctx.Err(), "wait for the agent's launch protocol")
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, errdefs.New(errdefs.Unavailable, "the agent did not state its launch protocol within %s (see agent.log)", timeout)
	}
	return nil, errdefs.Wrap(errdefs.Unavailable, err, "boot socket")
}

// checkHello checks that the agent at path, which sent hello (nil: none),
// speaks this library's launch protocol (bootparam.LaunchProtocol).
func checkHello(hello []byte, path string) error {
	v, ok := bootparam.ParseHello(hello)
	if ok && v == bootparam.LaunchProtocol {
		return nil
	}
	speaks := fmt.Sprintf("speaks launch protocol %d", v)
	if !ok {
		speaks = "states no launch protocol (it is older, or it failed at once: see agent.log)"
	}
	return errdefs.New(errdefs.FailedPrecondition, "the box agent at %s %s, this library speaks %d: rebuild both from one source (./build.sh build), or set LIBBOX_AGENT to a matching box-agent",
		path, speaks, bootparam.LaunchProtocol)
}

// attachMounts makes the id-mapped mounts and attaches them in the mount
// namespace of the agent pid at dir/<name>, then sends the agent, which
// waits on sock before it mounts anything (see
// bootparam.SandboxSpec.BootSocket), the box dir, opened in its namespace,
// to work in. It runs as soon as the agent is forked: the
// namespaces exist from then on, and the agent's runtime starts meanwhile.
// A volume whose filesystem cannot be id-mapped is attached as it is (its
// files appear to the box as nobody) and the description says so.
func attachMounts(pid, sock int, dir string, mounts []hostMount) ([]string, error) {
	if len(mounts) == 0 {
		return nil, nil
	}
	userns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/user", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "sandbox user namespace")
	}
	defer unix.Close(userns)
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	var desc []string
	for _, m := range mounts {
		fd, mapErr := idMappedTree(m.source, userns)
		switch {
		case mapErr == nil:
			desc = append(desc, m.box+": id-mapped (host uid N is box uid N)")
		case m.image:
			return nil, errdefs.Wrap(errdefs.Unsupported, mapErr, "sandbox image: the kernel or the filesystem of the libbox home cannot id-map mounts (needs Linux >= 5.19 and ext4, xfs or btrfs)")
		default:
			fd, err = unix.OpenTree(unix.AT_FDCWD, m.source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
			if err != nil {
				return nil, errdefs.Wrap(errdefs.FailedPrecondition, err, "volume %s", m.source)
			}
			desc = append(desc, fmt.Sprintf("%s: not id-mapped (%v): host files appear as nobody, the box's files belong to its host ids", m.box, mapErr))
		}
		fds = append(fds, fd)
	}
	dirFD := -1
	if err := launch.InNamespace(pid, "mnt", func() error {
		for i, m := range mounts {
			if err := unix.MoveMount(fds[i], "", unix.AT_FDCWD, filepath.Join(dir, m.name), unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
				return fmt.Errorf("attach %s: %w", m.source, err)
			}
		}
		// The box dir as the agent's namespace sees it: its working dir.
		dirFD, err = unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		return err
	}); err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "sandbox mounts")
	}
	fds = append(fds, dirFD)
	if err := unix.Sendmsg(sock, []byte{'m'}, unix.UnixRights(dirFD), nil, 0); err != nil {
		return nil, errdefs.Wrap(errdefs.Unavailable, err, "sandbox agent")
	}
	return desc, nil
}
