package bridge

// Snapshots, restore and export (box_snapshot, box_snapshots,
// box_snapshot_remove, box_restore, box_export).

import (
	"context"
	"encoding/json"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox"
)

// snapshotRequest is box_snapshot's request.
type snapshotRequest struct {
	Name   string `json:"name"`
	Memory bool   `json:"memory"`
}

// Snapshot takes a snapshot asynchronously; done gets it as JSON.
func Snapshot(boxH uint64, reqJSON string, done Done) error {
	var req snapshotRequest
	if err := decode("snapshot request", reqJSON, &req); err != nil {
		return err
	}
	if req.Name == "" {
		return fail(errdefs.InvalidArgument, "box_snapshot: \"name\" is required")
	}
	return boxAsync(boxH, done, "box_snapshot", func(ctx context.Context, b *libbox.Box) (string, error) {
		info, err := b.Snapshot(ctx, req.Name, libbox.SnapshotOptions{Memory: req.Memory})
		if err != nil {
			return "", err
		}
		js, err := json.Marshal(info)
		return string(js), err
	})
}

// Snapshots lists the snapshots of the home as a JSON array.
func Snapshots(rtH uint64) (string, error) {
	e, err := lookup(rtH, kindRuntime)
	if err != nil {
		return "", err
	}
	list, err := e.rt.rt.Snapshots(e.rt.ctx)
	if err != nil {
		return "", err
	}
	js, err := json.Marshal(list)
	return string(js), err
}

// RemoveSnapshot deletes a snapshot asynchronously.
func RemoveSnapshot(rtH uint64, name string, force bool, done Done) error {
	if done == nil {
		return fail(errdefs.InvalidArgument, "box_snapshot_remove: the completion callback is NULL")
	}
	e, err := lookup(rtH, kindRuntime)
	if err != nil {
		return err
	}
	if name == "" {
		return fail(errdefs.InvalidArgument, "box_snapshot_remove: the snapshot name is empty")
	}
	re := e.rt
	async(re, done, func(ctx context.Context) (uint64, string, error) {
		return 0, "", re.rt.RemoveSnapshot(context.WithoutCancel(ctx), name, force)
	})
	return nil
}

// Restore rolls a stopped box back to a snapshot asynchronously.
func Restore(boxH uint64, name string, done Done) error {
	if name == "" {
		return fail(errdefs.InvalidArgument, "box_restore: the snapshot name is empty")
	}
	return boxAsync(boxH, done, "box_restore", func(ctx context.Context, b *libbox.Box) (string, error) {
		return "", b.Restore(ctx, name)
	})
}

// Export writes a box's file system as an OCI image layout asynchronously;
// done gets {"image": "oci-layout:DIR"}.
func Export(boxH uint64, dir string, done Done) error {
	if dir == "" {
		return fail(errdefs.InvalidArgument, "box_export: the directory is empty")
	}
	return boxAsync(boxH, done, "box_export", func(ctx context.Context, b *libbox.Box) (string, error) {
		if err := b.Export(ctx, dir); err != nil {
			return "", err
		}
		js, err := json.Marshal(map[string]string{"image": "oci-layout:" + dir})
		return string(js), err
	})
}
