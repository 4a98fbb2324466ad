//go:build linux

package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/internal/vmboot"
)

// A VM snapshot is one qcow2 layer, <snapshot dir>/disk.qcow2, whose
// backing file is its parent's layer or the image's base disk. Taking one
// moves the box's overlay there (nothing is copied) and gives the box a new
// overlay on it: a qcow2 backing chain.

var _ backend.Snapshotter = (*Backend)(nil)

// snapshotTimeout bounds the QMP conversation of a running box's snapshot
// when ctx has no deadline.
const snapshotTimeout = 60 * time.Second

func layerDisk(snapshotDir string) string { return filepath.Join(snapshotDir, diskName) }

// Snapshot moves the box's overlay into dst and puts the box on a new,
// empty overlay above it. A running box is paused (QMP stop) while QEMU
// switches to the new overlay (blockdev-snapshot-sync on an overlay made
// beforehand), then continues (QMP cont).
func (b *Backend) Snapshot(ctx context.Context, spec backend.Spec, inst backend.Instance, dst string) (backend.SnapshotResult, error) {
	disk, layer := filepath.Join(spec.Dir, diskName), layerDisk(dst)
	if inst == nil {
		if err := b.ensureDisk(ctx, spec); err != nil {
			return backend.SnapshotResult{}, err
		}
		if err := os.Rename(disk, layer); err != nil {
			return backend.SnapshotResult{}, errdefs.Wrap(errdefs.Internal, err, "snapshot layer")
		}
		if err := createOverlay(ctx, disk, layer, "qcow2", ""); err != nil {
			_ = os.Rename(layer, disk)
			return backend.SnapshotResult{}, err
		}
		return backend.SnapshotResult{OnTop: true}, nil
	}
	size, err := virtualSize(ctx, disk)
	if err != nil {
		return backend.SnapshotResult{}, err
	}
	q, err := dialQMP(ctx, filesIn(spec.Dir).qmpSock)
	if err != nil {
		return backend.SnapshotResult{}, errdefs.Wrap(errdefs.Unavailable, err, "snapshot: QMP of box %s", spec.ID)
	}
	defer q.close()
	if err := q.run("stop", nil); err != nil {
		return backend.SnapshotResult{}, errdefs.Wrap(errdefs.Internal, err, "snapshot: pause box %s", spec.ID)
	}
	var j *jail
	if in, ok := inst.(*instance); ok {
		j = in.jail
	}
	err = switchOverlay(ctx, q, disk, layer, size, j)
	if cerr := q.run("cont", nil); cerr != nil && err == nil {
		err = errdefs.Wrap(errdefs.Internal, cerr, "snapshot: resume box %s", spec.ID)
	}
	if err != nil {
		return backend.SnapshotResult{}, err
	}
	return backend.SnapshotResult{OnTop: true}, nil
}

// switchOverlay moves the paused VM's overlay (QEMU keeps its fd) to
// layer, makes a new overlay at its old path on it, and has QEMU write to
// the new one from now on; the old one is read-only from then.
func switchOverlay(ctx context.Context, q *qmpConn, disk, layer, size string, j *jail) error {
	if err := os.Rename(disk, layer); err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "snapshot layer")
	}
	err := createOverlay(ctx, disk, layer, "qcow2", size)
	if err == nil {
		err = j.own(disk)
	}
	if err == nil {
		err = q.run("blockdev-snapshot-sync", map[string]any{
			"device": "root", "snapshot-file": j.path(disk), "format": "qcow2", "mode": "existing",
		})
		if err != nil {
			err = errdefs.Wrap(errdefs.Internal, err, "snapshot: switch overlay")
		}
	}
	if err != nil {
		_ = os.Remove(disk)
		_ = os.Rename(layer, disk)
	}
	return err
}

// ensureDisk makes the overlay a box that never started lacks.
func (b *Backend) ensureDisk(ctx context.Context, spec backend.Spec) error {
	if _, err := os.Stat(filepath.Join(spec.Dir, diskName)); err == nil {
		return nil
	}
	if len(spec.Layers) > 0 {
		return createOverlay(ctx, filepath.Join(spec.Dir, diskName), layerDisk(spec.Layers[0]), "qcow2", "")
	}
	base, err := vmboot.BaseDisk(ctx, b.cache, spec.ImageRoot, spec.ImageID)
	if err != nil {
		return err
	}
	_, err = overlayDisk(ctx, spec.Dir, base)
	return err
}

// Reset replaces the stopped box's overlay with an empty one on its top
// layer (none: Start makes one on the base disk). On a memory snapshot,
// the box's next start resumes it (memsnap.go).
func (b *Backend) Reset(ctx context.Context, spec backend.Spec) error {
	if err := os.Remove(filepath.Join(spec.Dir, diskName)); err != nil && !os.IsNotExist(err) {
		return errdefs.Wrap(errdefs.Internal, err, "reset box disk")
	}
	if err := b.ensureDisk(ctx, spec); err != nil {
		return err
	}
	return markResume(spec)
}

// qmpConn is one QMP conversation of several commands (QMP serves one
// client at a time).
type qmpConn struct {
	c    net.Conn
	r    *bufio.Reader
	stop func() bool // ends the watch on the dial's context
}

func dialQMP(ctx context.Context, sock string) (*qmpConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, err
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(snapshotTimeout)
	}
	_ = c.SetDeadline(dl)
	q := &qmpConn{c: c, r: bufio.NewReader(c)}
	// A canceled context ends a conversation at once, not at its deadline.
	q.stop = context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	if _, err := q.read(); err != nil { // greeting
		q.close()
		return nil, err
	}
	if err := q.run("qmp_capabilities", nil); err != nil {
		q.close()
		return nil, err
	}
	return q, nil
}

func (q *qmpConn) close() {
	q.stop()
	q.c.Close()
}

// qmpError is QEMU's answer refusing a command (not a transport error).
type qmpError struct{ command, class, desc string }

func (e *qmpError) Error() string { return fmt.Sprintf("qmp %s: %s: %s", e.command, e.class, e.desc) }

type qmpReply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string `json:"event"`
}

// read returns the next reply that is not an event.
func (q *qmpConn) read() (qmpReply, error) {
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return qmpReply{}, err
		}
		var rep qmpReply
		if err := json.Unmarshal(line, &rep); err != nil {
			return qmpReply{}, fmt.Errorf("qmp: %w", err)
		}
		if rep.Event == "" {
			return rep, nil
		}
	}
}

func (q *qmpConn) run(command string, args any) error {
	_, err := q.call(command, args)
	return err
}

// call runs one command and returns its "return" value.
func (q *qmpConn) call(command string, args any) (json.RawMessage, error) {
	return q.callFD(command, args, nil)
}

// sendFD hands QEMU f under the name qmpFD, so a command can use it ("fd:"
// URIs): QEMU then needs no path and no exec (its jail allows neither).
func (q *qmpConn) sendFD(f *os.File) error {
	_, err := q.callFD("getfd", map[string]any{"fdname": qmpFD}, unix.UnixRights(int(f.Fd())))
	return err
}

func (q *qmpConn) callFD(command string, args any, rights []byte) (json.RawMessage, error) {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	if _, _, err := q.c.(*net.UnixConn).WriteMsgUnix(append(b, '\n'), rights, nil); err != nil {
		return nil, err
	}
	rep, err := q.read()
	if err != nil {
		return nil, err
	}
	if rep.Error != nil {
		return nil, &qmpError{command, rep.Error.Class, rep.Error.Desc}
	}
	return rep.Return, nil
}
