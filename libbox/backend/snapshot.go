package backend

import "context"

// Snapshotter is implemented by backends whose boxes' file systems can be
// frozen into read-only layers: the snapshots, clones and restores of the
// runtime. The runtime owns the snapshot store (names, parents, who depends
// on what); the backend owns what is inside one snapshot directory (the
// sandbox: "fs", an overlay layer; the VM: "disk.qcow2", a qcow2 layer whose
// backing file is its parent's layer or the image's base disk).
//
// A layer is never written once its snapshot exists. Spec.Layers lists the
// box's read-only layers, topmost first (snapshot directories); the box's
// own writable layer lives in Spec.Dir.
type Snapshotter interface {
	// Snapshot freezes the box's file system into dst, a new empty
	// directory. inst is the box's running instance, or nil when the box is
	// stopped (the runtime serializes Snapshot with Start and Stop). A
	// running box is paused for the time it takes (the sandbox: its cgroup
	// is frozen; the VM: QMP stop) and resumed before Snapshot returns,
	// also on error. On error dst holds nothing the runtime needs and the
	// box's file system is as it was.
	Snapshot(ctx context.Context, spec Spec, inst Instance, dst string) (SnapshotResult, error)
	// Reset empties the box's writable layer so that its file system is
	// exactly spec.Layers (the image when there are none). The box is
	// stopped. Used to make a clone and to restore a snapshot.
	Reset(ctx context.Context, spec Spec) error
}

// SnapshotResult says what Snapshotter.Snapshot did.
type SnapshotResult struct {
	// OnTop is true when the box now runs on dst as its top read-only
	// layer (with a new, empty writable layer above it); false when dst is
	// a copy and the box kept its writable layer.
	OnTop bool
	// Written is how many bytes of file data were copied to make dst (0
	// when the layer was moved, not copied).
	Written int64
}

// MemorySnapshotter is implemented by backends that can also save a
// running box's memory and device state with its snapshot, so that a box
// whose file system is that snapshot resumes the running machine instead
// of booting (its next start after Reset onto it; the caller then gives it
// its identity, as for a template: see Restored).
type MemorySnapshotter interface {
	// SnapshotMemory is Snapshot of a running box (inst is not nil) that
	// also writes its memory and device state into dst, consistent with
	// the layer: the box is paused for both, then continues. When it fails
	// with OnTop set, the layer was taken (the box runs on it) and only
	// the memory state is missing.
	SnapshotMemory(ctx context.Context, spec Spec, inst Instance, dst string) (SnapshotResult, error)
}
