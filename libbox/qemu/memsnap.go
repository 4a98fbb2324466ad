//go:build linux

package qemu

// Memory snapshots: a snapshot of a running box that also holds its
// memory and device state, so that a box on it resumes the running
// machine instead of booting.
//
// Taking one pauses the VM, switches it to a new overlay (the old one
// becomes the snapshot's layer, as for a disk snapshot), writes the
// paused machine's state into the snapshot directory (QMP migrate to an
// fd, as templates do) and continues the VM: the layer and the memory are
// of the same instant. Reset onto such a snapshot (a clone, a restore)
// leaves a marker in the box directory; the box's next start consumes it
// and starts QEMU with the same arguments as the snapshotted one and
// -incoming, so the machine continues where it was paused, its disk the
// new overlay on the layer. Without the marker (any later start) the box
// boots from its disk as usual.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/bootparam"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/internal/vmboot"
)

const (
	memoryStateFile = "memory.state"
	memoryMetaFile  = "memory.json"
	// resumeMarker, in a box directory, names the memory snapshot its next
	// start resumes.
	resumeMarker = "resume"
)

var _ backend.MemorySnapshotter = (*Backend)(nil)

// memoryMeta describes a memory snapshot; it is written last.
type memoryMeta struct {
	Format int `json:"format"`
	// Key is the template key of the box's configuration (QEMU, kernel,
	// initramfs, base disk, CPUs, memory): a box resumes only with the same.
	Key string `json:"key"`
	// Argv are QEMU's arguments with the box's own parts replaced
	// (normalArgs); Hostname is the one on the saved machine's kernel
	// command line.
	Argv       []string `json:"argv"`
	Hostname   string   `json:"hostname"`
	StateBytes int64    `json:"state_bytes"`
}

// SnapshotMemory takes a disk snapshot of the running box into dst and
// saves its memory and device state beside it (see backend.MemorySnapshotter).
func (b *Backend) SnapshotMemory(ctx context.Context, spec backend.Spec, inst backend.Instance, dst string) (backend.SnapshotResult, error) {
	in, ok := inst.(*instance)
	if !ok || len(in.args) == 0 {
		return backend.SnapshotResult{}, errdefs.New(errdefs.FailedPrecondition, "memory snapshot of box %s: it was started by another process; take it there", spec.ID)
	}
	if len(spec.Volumes) > 0 || spec.Network {
		return backend.SnapshotResult{}, errdefs.New(errdefs.FailedPrecondition, "memory snapshot of box %s: a box with volumes or a network keeps state outside the VM (virtiofsd, the network) that a memory snapshot cannot carry; take a disk snapshot", spec.ID)
	}
	pr, err := b.prepare(ctx, spec)
	if err != nil {
		return backend.SnapshotResult{}, err
	}
	key, err := b.templateKey(pr, spec)
	if err != nil {
		return backend.SnapshotResult{}, err
	}
	args, host := bootArgs(in.args)
	disk, layer := filepath.Join(spec.Dir, diskName), layerDisk(dst)
	size, err := virtualSize(ctx, disk)
	if err != nil {
		return backend.SnapshotResult{}, err
	}
	// The state first: QEMU cannot continue a VM whose disk changed
	// overlay before a migration (it fails to take the image's write lock
	// back), and an overlay switched after it is as consistent: the VM
	// stays paused throughout.
	state := filepath.Join(dst, memoryStateFile)
	if _, err := qmp(ctx, in.files.qmpSock, "stop"); err != nil {
		return backend.SnapshotResult{}, errdefs.Wrap(errdefs.Internal, err, "memory snapshot: pause box %s", spec.ID)
	}
	// All of the RAM goes into the state, also that of a box restored from
	// a template (whose QEMU had to ignore shared RAM to load it).
	err = ignoreSharedRAM(ctx, in.files.qmpSock, false)
	if err == nil {
		err = in.writeState(ctx, state)
	}
	switched := false
	if err == nil {
		var q *qmpConn
		if q, err = dialQMP(ctx, in.files.qmpSock); err != nil {
			err = errdefs.Wrap(errdefs.Unavailable, err, "memory snapshot: QMP of box %s", spec.ID)
		} else {
			err = switchOverlay(ctx, q, disk, layer, size, in.jail)
			q.close() // QMP serves one client at a time
			switched = err == nil
		}
	}
	if err == nil {
		m := memoryMeta{Format: templateFormat, Key: key, Argv: normalArgs(args, spec), Hostname: host, StateBytes: fileSize(state)}
		raw, _ := json.MarshalIndent(m, "", "  ")
		if werr := vmboot.WriteFileAtomic(filepath.Join(dst, memoryMetaFile), raw); werr != nil {
			err = errdefs.Wrap(errdefs.Internal, werr, "memory snapshot of box %s", spec.ID)
		}
	}
	if err != nil {
		_ = os.Remove(state)
	}
	if _, cerr := qmp(ctx, in.files.qmpSock, "cont"); cerr != nil && err == nil {
		err = errdefs.Wrap(errdefs.Internal, cerr, "memory snapshot: resume box %s", spec.ID)
	}
	return backend.SnapshotResult{OnTop: switched}, err
}

// bootArgs are the arguments a VM was started with as if it had booted
// (without the -incoming of a restore), and the hostname on its kernel
// command line.
func bootArgs(args []string) ([]string, string) {
	out := make([]string, 0, len(args))
	host := ""
	for i := 0; i < len(args); i++ {
		if args[i] == "-incoming" && i+1 < len(args) {
			i++
			continue
		}
		for _, w := range strings.Fields(args[i]) {
			if h, ok := strings.CutPrefix(w, bootparam.ParamHostname+"="); ok {
				host = h
			}
		}
		out = append(out, args[i])
	}
	return out, host
}

// markResume records, after a Reset, that the box's next start resumes
// the memory snapshot its disk now sits on (if its top layer is one).
func markResume(spec backend.Spec) error {
	marker := filepath.Join(spec.Dir, resumeMarker)
	if len(spec.Layers) == 0 || fileSize(filepath.Join(spec.Layers[0], memoryMetaFile)) == 0 {
		if err := os.Remove(marker); err != nil && !os.IsNotExist(err) {
			return errdefs.Wrap(errdefs.Internal, err, "reset box disk")
		}
		return nil
	}
	if err := vmboot.WriteFileAtomic(marker, []byte(spec.Layers[0]+"\n")); err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "reset box disk")
	}
	return nil
}

// resumeArgs returns QEMU's arguments to resume the memory snapshot the
// box's disk was just reset onto, and that snapshot's directory; or args
// and "" to boot (no marker: the disk was used since, or the snapshot
// does not fit the box's configuration: a clone with other CPUs or
// memory, a network, another kernel or agent; or the box is to boot cold).
// The marker is consumed.
func (b *Backend) resumeArgs(ctx context.Context, spec backend.Spec, pr *prepared, args []string) ([]string, string) {
	marker := filepath.Join(spec.Dir, resumeMarker)
	raw, err := os.ReadFile(marker)
	if err != nil {
		return args, ""
	}
	_ = os.Remove(marker)
	dir := strings.TrimSpace(string(raw))
	why := func() error {
		if spec.ColdBoot {
			return fmt.Errorf("the box was made to boot cold")
		}
		if len(spec.Layers) == 0 || spec.Layers[0] != dir {
			return fmt.Errorf("the box is no longer on it")
		}
		var m memoryMeta
		if raw, err := os.ReadFile(filepath.Join(dir, memoryMetaFile)); err != nil || json.Unmarshal(raw, &m) != nil {
			return fmt.Errorf("its description is unreadable")
		}
		key, err := b.templateKey(pr, spec)
		if err != nil {
			return err
		}
		if m.Format != templateFormat || m.Key != key {
			return fmt.Errorf("it was taken with another QEMU, kernel, agent, image disk, CPUs or memory")
		}
		if !slices.Equal(m.Argv, normalArgs(args, spec)) {
			return fmt.Errorf("it was taken of a VM with other devices (volumes, network)")
		}
		for i, a := range args {
			args[i] = replaceHostname(a, m.Hostname)
		}
		return nil
	}()
	if why != nil {
		b.logf("libbox: box %s boots instead of resuming memory snapshot %s: %v", spec.ID, dir, why)
		return args, ""
	}
	return append(args, "-incoming", "defer"), dir // waitRestored hands QEMU the state
}
