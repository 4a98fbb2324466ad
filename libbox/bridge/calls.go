package bridge

// Runtime, box and image calls. An asynchronous call checks its arguments
// first (a rejected call returns an error and never calls done), then runs
// through async, which completes done exactly once.

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox"
)

// async runs fn on a goroutine tracked by the runtime and completes done
// exactly once.
func async(re *runtimeEntry, done Done, fn func(ctx context.Context) (uint64, string, error)) {
	re.ops.Add(1)
	go func() {
		defer re.ops.Done()
		h, js, err := fn(re.ctx)
		st, msg := Status(err)
		if err != nil {
			h, js = 0, ""
		}
		done(st, msg, h, js)
	}()
}

// boxAsync runs fn on the box of boxH through async.
func boxAsync(boxH uint64, done Done, what string, fn func(ctx context.Context, b *libbox.Box) (string, error)) error {
	if done == nil {
		return fail(errdefs.InvalidArgument, "%s: the completion callback is NULL", what)
	}
	e, err := lookup(boxH, kindBox)
	if err != nil {
		return err
	}
	async(e.rt, done, func(ctx context.Context) (uint64, string, error) {
		js, err := fn(ctx, e.box)
		return 0, js, err
	})
	return nil
}

// ---- runtime ----

// RuntimeOpen opens a runtime. opts: {"home": "..."}.
func RuntimeOpen(optsJSON string) (uint64, error) {
	opts, err := parseRuntimeOptions(optsJSON)
	if err != nil {
		return 0, err
	}
	rt, err := libbox.Open(opts)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return add(&entry{kind: kindRuntime, rt: &runtimeEntry{rt: rt, ctx: ctx, cancel: cancel}}), nil
}

// RuntimeClose cancels the runtime's execs, waits for its asynchronous
// calls to complete, closes it and drops every handle that came from it.
func RuntimeClose(h uint64) error {
	e, err := remove(h, kindRuntime)
	if err != nil {
		return err
	}
	re := e.rt
	re.cancel()
	re.ops.Wait()
	err = re.rt.Close()
	mu.Lock()
	for k, v := range handles {
		if v.rt == re {
			delete(handles, k)
		}
	}
	mu.Unlock()
	return err
}

// ---- boxes ----

// Create makes a box asynchronously; done gets the new box handle.
func Create(rtH uint64, optsJSON string, progress Progress, done Done) error {
	if done == nil {
		return fail(errdefs.InvalidArgument, "box_create: the completion callback is NULL")
	}
	e, err := lookup(rtH, kindRuntime)
	if err != nil {
		return err
	}
	bo, err := parseBoxOptions(optsJSON, progress)
	if err != nil {
		return err
	}
	re := e.rt
	async(re, done, func(ctx context.Context) (uint64, string, error) {
		b, err := re.rt.Create(ctx, bo)
		if err != nil {
			return 0, "", err
		}
		return add(&entry{kind: kindBox, rt: re, box: b}), "", nil
	})
	return nil
}

// Get returns a new handle on an existing box.
func Get(rtH uint64, idOrName string) (uint64, error) {
	e, err := lookup(rtH, kindRuntime)
	if err != nil {
		return 0, err
	}
	b, err := e.rt.rt.Get(e.rt.ctx, idOrName)
	if err != nil {
		return 0, err
	}
	return add(&entry{kind: kindBox, rt: e.rt, box: b}), nil
}

// List describes every box as a JSON array.
func List(rtH uint64) (string, error) {
	e, err := lookup(rtH, kindRuntime)
	if err != nil {
		return "", err
	}
	infos, err := e.rt.rt.List(e.rt.ctx)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(infos)
	return string(b), err
}

// Info describes one box as a JSON object.
func Info(boxH uint64) (string, error) {
	e, err := lookup(boxH, kindBox)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(e.box.Info())
	return string(b), err
}

// Start boots a box asynchronously.
func Start(boxH uint64, done Done) error {
	return boxAsync(boxH, done, "box_start", func(ctx context.Context, b *libbox.Box) (string, error) {
		return "", b.Start(ctx)
	})
}

// Stop stops a box asynchronously.
func Stop(boxH uint64, done Done) error {
	return boxAsync(boxH, done, "box_stop", func(ctx context.Context, b *libbox.Box) (string, error) {
		// A stop runs to its end even when the runtime closes meanwhile.
		return "", b.Stop(context.WithoutCancel(ctx))
	})
}

// Remove deletes a box asynchronously.
func Remove(rtH uint64, idOrName string, force bool, done Done) error {
	if done == nil {
		return fail(errdefs.InvalidArgument, "box_remove: the completion callback is NULL")
	}
	e, err := lookup(rtH, kindRuntime)
	if err != nil {
		return err
	}
	if idOrName == "" {
		return fail(errdefs.InvalidArgument, "box_remove: box id or name is empty")
	}
	re := e.rt
	async(re, done, func(ctx context.Context) (uint64, string, error) {
		return 0, "", re.rt.Remove(context.WithoutCancel(ctx), idOrName, force)
	})
	return nil
}

// CopyIn copies a host path into a box asynchronously.
func CopyIn(boxH uint64, host, boxPath string, done Done) error {
	if host == "" || boxPath == "" {
		return fail(errdefs.InvalidArgument, "box_copy_in: host and box paths are required")
	}
	return boxAsync(boxH, done, "box_copy_in", func(ctx context.Context, b *libbox.Box) (string, error) {
		n, err := b.CopyIn(ctx, host, boxPath)
		return fmt.Sprintf(`{"bytes":%d}`, n), err
	})
}

// CopyOut copies a box path to the host asynchronously.
func CopyOut(boxH uint64, boxPath, host string, done Done) error {
	if host == "" || boxPath == "" {
		return fail(errdefs.InvalidArgument, "box_copy_out: box and host paths are required")
	}
	return boxAsync(boxH, done, "box_copy_out", func(ctx context.Context, b *libbox.Box) (string, error) {
		n, err := b.CopyOut(ctx, boxPath, host)
		return fmt.Sprintf(`{"bytes":%d}`, n), err
	})
}

// ---- images ----

// Pull fetches an image asynchronously; done gets it as JSON.
func Pull(rtH uint64, ref string, progress Progress, done Done) error {
	if done == nil {
		return fail(errdefs.InvalidArgument, "box_pull: the completion callback is NULL")
	}
	e, err := lookup(rtH, kindRuntime)
	if err != nil {
		return err
	}
	pf := imageProgress(progress)
	re := e.rt
	async(re, done, func(ctx context.Context) (uint64, string, error) {
		img, err := re.rt.PullImage(ctx, ref, pf)
		if err != nil {
			return 0, "", err
		}
		b, err := json.Marshal(toImageJSON(*img))
		return 0, string(b), err
	})
	return nil
}

// PullAsync fetches an image asynchronously like Pull, with a request
// ({"ref", "platform"}) and a pull handle: PullCancel stops it (done then
// gets Canceled). The caller releases the handle.
func PullAsync(rtH uint64, reqJSON string, progress Progress, done Done) (uint64, error) {
	if done == nil {
		return 0, fail(errdefs.InvalidArgument, "box_pull_async: the completion callback is NULL")
	}
	e, err := lookup(rtH, kindRuntime)
	if err != nil {
		return 0, err
	}
	req, err := parsePullRequest(reqJSON)
	if err != nil {
		return 0, err
	}
	re := e.rt
	ctx, cancel := context.WithCancel(re.ctx)
	h := add(&entry{kind: kindPull, rt: re, cancel: cancel})
	o := libbox.PullOptions{Platform: req.Platform, Progress: imageProgress(progress)}
	async(re, done, func(context.Context) (uint64, string, error) {
		defer cancel()
		img, err := re.rt.Pull(ctx, req.Ref, o)
		if err != nil {
			return 0, "", err
		}
		b, err := json.Marshal(toImageJSON(*img))
		return 0, string(b), err
	})
	return h, nil
}

// PullCancel stops a pull started by PullAsync. Idempotent; after the
// pull ended it does nothing.
func PullCancel(h uint64) error {
	e, err := lookup(h, kindPull)
	if err != nil {
		return err
	}
	e.cancel()
	return nil
}

// PruneImages deletes unreferenced, unused images and blobs asynchronously;
// done gets {"roots", "blobs", "bytes"}.
func PruneImages(rtH uint64, done Done) error {
	if done == nil {
		return fail(errdefs.InvalidArgument, "box_image_prune: the completion callback is NULL")
	}
	e, err := lookup(rtH, kindRuntime)
	if err != nil {
		return err
	}
	re := e.rt
	async(re, done, func(ctx context.Context) (uint64, string, error) {
		rep, err := re.rt.PruneImages(ctx)
		if err != nil {
			return 0, "", err
		}
		return 0, fmt.Sprintf(`{"roots":%d,"blobs":%d,"bytes":%d}`, rep.Roots, rep.Blobs, rep.Bytes), nil
	})
	return nil
}

// Images lists stored images as JSON.
func Images(rtH uint64) (string, error) {
	e, err := lookup(rtH, kindRuntime)
	if err != nil {
		return "", err
	}
	imgs, err := e.rt.rt.Images(e.rt.ctx)
	if err != nil {
		return "", err
	}
	out := make([]imageJSON, len(imgs))
	for i, img := range imgs {
		out[i] = toImageJSON(img)
	}
	b, err := json.Marshal(out)
	return string(b), err
}

// RemoveImage deletes an image asynchronously.
func RemoveImage(rtH uint64, ref string, force bool, done Done) error {
	if done == nil {
		return fail(errdefs.InvalidArgument, "box_image_remove: the completion callback is NULL")
	}
	e, err := lookup(rtH, kindRuntime)
	if err != nil {
		return err
	}
	re := e.rt
	async(re, done, func(ctx context.Context) (uint64, string, error) {
		return 0, "", re.rt.RemoveImage(ctx, ref, force)
	})
	return nil
}

// ---- VM templates ----

// Warm builds the VM template of an image asynchronously for boxes made
// with opts (box options JSON: "cpus", "memory_mib", "platform" matter);
// done gets "{}" once it exists.
func Warm(rtH uint64, ref, optsJSON string, done Done) error {
	if done == nil {
		return fail(errdefs.InvalidArgument, "box_warm: the completion callback is NULL")
	}
	e, err := lookup(rtH, kindRuntime)
	if err != nil {
		return err
	}
	o, err := parseBoxOptions(optsJSON, nil)
	if err != nil {
		return err
	}
	re := e.rt
	async(re, done, func(ctx context.Context) (uint64, string, error) {
		return 0, "{}", re.rt.Warm(ctx, ref, o)
	})
	return nil
}
