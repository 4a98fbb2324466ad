package libbox

import (
	"cmp"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
)

// Snapshots. A snapshot freezes a box's file system under a name unique in
// the home: home/snapshots/<id>/ holds snapshot.json and the backend's
// read-only layer (see backend.Snapshotter). A snapshot's parent is the
// layer below it (another snapshot, or none: the image). A box records the
// snapshot its file system sits on (boxState.Base); its writable layer is
// above that. Layers are never written once made, so any number of boxes
// and snapshots can share them.
//
// A snapshot without a name is hidden: it is what a clone made from a box
// (not from a snapshot) sits on, or a named snapshot removed with force
// while something still depended on it. A hidden snapshot is deleted as
// soon as nothing depends on it any more.
//
// Lock order: Box.opMu, then the store lock (Runtime.storeLock), then
// Box.mu.

// SnapshotOptions shape Box.Snapshot.
type SnapshotOptions struct {
	// Memory also saves a running VM box's memory and device state with
	// its disk, so that a box created from the snapshot (or restored to
	// it) resumes the running machine instead of booting: its processes
	// run on, its tmpfs files are there. A clone gets its own identity
	// (random seed, clock, hostname, box id); a restore of the same box
	// keeps its hostname and id and gets the current clock and a fresh
	// seed. VM boxes only, running, without volumes or a network; a
	// sandbox box cannot (its processes are host processes, which libbox
	// cannot checkpoint): Unsupported.
	Memory bool
}

// SnapshotInfo describes a snapshot.
type SnapshotInfo struct {
	Name      string    `json:"name"`
	ID        string    `json:"id"`
	Box       string    `json:"box"`      // id of the box it was taken of
	BoxName   string    `json:"box_name"` // that box's name then
	Isolation string    `json:"isolation"`
	Image     string    `json:"image"`
	ImageID   string    `json:"image_id"`
	Parent    string    `json:"parent,omitempty"` // the snapshot below (its name, or id when hidden); empty: the image
	CreatedAt time.Time `json:"created_at"`
	// Size is the disk space its own layer takes (not its parents').
	Size int64 `json:"size"`
	// Written is the bytes of file data copied to take it (0 when the
	// box's layer was moved instead: a stopped box, or a VM box).
	Written int64 `json:"written"`
	// UsedBy names the boxes and snapshots that sit on it.
	UsedBy []string `json:"used_by,omitempty"`
	// Memory is true when it holds a VM's memory and device state too.
	Memory bool `json:"memory,omitempty"`
}

// snapshotRecord is snapshots/<id>/snapshot.json: what a clone needs to
// become a box like the source.
type snapshotRecord struct {
	ID              string    `json:"id"`
	Name            string    `json:"name,omitempty"` // empty: hidden
	Parent          string    `json:"parent,omitempty"`
	Box             string    `json:"box"`
	BoxName         string    `json:"box_name,omitempty"`
	Isolation       string    `json:"isolation"`
	Image           string    `json:"image"`
	ImageID         string    `json:"image_id"`
	Platform        string    `json:"platform,omitempty"`
	ImageEntrypoint []string  `json:"image_entrypoint,omitempty"`
	ImageCmd        []string  `json:"image_cmd,omitempty"`
	CPUs            int       `json:"cpus,omitempty"`
	MemoryMiB       int       `json:"memory_mib,omitempty"`
	Env             []string  `json:"env,omitempty"`
	WorkingDir      string    `json:"working_dir,omitempty"`
	User            string    `json:"user,omitempty"`
	CreatedAt       time.Time `json:"created_at"`
	Size            int64     `json:"size"`
	Written         int64     `json:"written"`
	Memory          bool      `json:"memory,omitempty"`
}

func (r *Runtime) snapshotsDir() string         { return filepath.Join(r.home, "snapshots") }
func (r *Runtime) snapshotDir(id string) string { return filepath.Join(r.snapshotsDir(), id) }

// loadSnapshots reads every snapshot record of the home, by id.
func (r *Runtime) loadSnapshots() (map[string]snapshotRecord, error) {
	out := map[string]snapshotRecord{}
	ents, err := os.ReadDir(r.snapshotsDir())
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "read snapshot store")
	}
	for _, e := range ents {
		if !e.IsDir() || e.Name()[0] == '.' {
			continue
		}
		var s snapshotRecord
		if readJSON(filepath.Join(r.snapshotDir(e.Name()), "snapshot.json"), &s) == nil && s.ID == e.Name() {
			out[s.ID] = s
		}
	}
	return out, nil
}

// findSnapshot returns the visible snapshot called name.
func findSnapshot(snaps map[string]snapshotRecord, name string) (snapshotRecord, bool) {
	for _, s := range snaps {
		if s.Name != "" && s.Name == name {
			return s, true
		}
	}
	return snapshotRecord{}, false
}

func (r *Runtime) snapshotByName(name string) (snapshotRecord, error) {
	if name == "" {
		return snapshotRecord{}, errdefs.New(errdefs.InvalidArgument, "snapshot name is empty")
	}
	snaps, err := r.loadSnapshots()
	if err != nil {
		return snapshotRecord{}, err
	}
	s, ok := findSnapshot(snaps, name)
	if !ok {
		return snapshotRecord{}, errdefs.New(errdefs.NotFound, "no snapshot named %q (the snapshots of this home are listed by `box snapshot ls`)", name)
	}
	return s, nil
}

// layerDirs is the chain of snapshot dirs from id down to the image,
// topmost first.
func (r *Runtime) layerDirs(id string) ([]string, error) {
	var out []string
	for id != "" {
		var s snapshotRecord
		if err := readJSON(filepath.Join(r.snapshotDir(id), "snapshot.json"), &s); err != nil {
			return nil, errdefs.New(errdefs.NotFound, "snapshot layer %s is missing from %s: the box cannot be started (remove it)", id, r.snapshotsDir())
		}
		out = append(out, r.snapshotDir(id))
		id = s.Parent
		if len(out) > 400 {
			return nil, errdefs.New(errdefs.Internal, "snapshot chain of %s is too deep or loops", id)
		}
	}
	return out, nil
}

// dependents maps each snapshot id to what sits directly on it: box ids
// and names, snapshot names (or ids when hidden). Needs the store lock.
func (r *Runtime) dependents(snaps map[string]snapshotRecord) (map[string][]string, error) {
	deps := map[string][]string{}
	for _, s := range snaps {
		if s.Parent != "" {
			deps[s.Parent] = append(deps[s.Parent], "snapshot "+snapshotLabel(s))
		}
	}
	cfgs, err := r.loadConfigs()
	if err != nil {
		return nil, err
	}
	for _, c := range cfgs {
		var st boxState
		if readJSON(filepath.Join(r.boxDir(c.ID), "state.json"), &st) != nil || st.Base == "" {
			continue
		}
		label := "box " + c.ID
		if c.Name != "" {
			label = "box " + c.Name
		}
		deps[st.Base] = append(deps[st.Base], label)
	}
	for _, d := range deps {
		sort.Strings(d)
	}
	return deps, nil
}

func snapshotLabel(s snapshotRecord) string {
	if s.Name != "" {
		return s.Name
	}
	return s.ID
}

// collectHidden deletes hidden snapshots nothing depends on, repeatedly
// (a parent may become free). Needs the store lock.
func (r *Runtime) collectHidden() {
	for {
		snaps, err := r.loadSnapshots()
		if err != nil || !anyHidden(snaps) {
			return // nothing hidden: no need to read every box's state
		}
		deps, err := r.dependents(snaps)
		if err != nil {
			return
		}
		freed := false
		for id, s := range snaps {
			if s.Name == "" && len(deps[id]) == 0 {
				if err := r.deleteSnapshot(id); err != nil {
					r.logf("libbox: remove unused snapshot layer %s: %v", id, err)
					continue
				}
				freed = true
			}
		}
		if !freed {
			return
		}
	}
}

func anyHidden(snaps map[string]snapshotRecord) bool {
	for _, s := range snaps {
		if s.Name == "" {
			return true
		}
	}
	return false
}

func (r *Runtime) deleteSnapshot(id string) error {
	dir := r.snapshotDir(id)
	// The record first: a snapshot without one does not exist.
	if err := os.Remove(filepath.Join(dir, "snapshot.json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return removeBoxDir(dir)
}

func (r *Runtime) snapshotter(isolation string) (backend.Snapshotter, error) {
	be, err := r.backend(isolation)
	if err != nil {
		return nil, err
	}
	s, ok := be.(backend.Snapshotter)
	if !ok {
		return nil, errdefs.New(errdefs.Unsupported, "isolation %q cannot take snapshots on this host", isolation)
	}
	return s, nil
}

// Snapshot freezes the box's file system under name (unique among the
// snapshots of the home). The box may be running: it is paused while the
// layer is taken (see the README's Snapshots section for what its
// processes may observe).
func (b *Box) Snapshot(ctx context.Context, name string, opts SnapshotOptions) (SnapshotInfo, error) {
	if !nameRE.MatchString(name) {
		return SnapshotInfo{}, errdefs.New(errdefs.InvalidArgument, "snapshot name %q: use 1-63 letters, digits, '_', '.', '-', starting with a letter or digit", name)
	}
	if err := b.rt.checkOpen(); err != nil {
		return SnapshotInfo{}, err
	}
	if opts.Memory && b.cfg.Isolation != IsolationVM {
		return SnapshotInfo{}, errdefs.New(errdefs.Unsupported, "memory snapshots: box %s is a %s box, whose processes are host processes; libbox has no checkpoint/restore of those (take a disk snapshot: memory false)", b.cfg.ID, b.cfg.Isolation)
	}
	b.opMu.Lock()
	defer b.opMu.Unlock()
	unlock, err := b.rt.storeLock()
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer unlock()
	rec, err := b.snapshotLocked(ctx, name, opts.Memory)
	if err != nil {
		return SnapshotInfo{}, err
	}
	return b.rt.snapshotInfo(rec, nil, nil), nil
}

// snapshotLocked takes a snapshot (hidden when name is empty), with the
// running VM's memory when memory. The caller holds b.opMu and the store
// lock.
func (b *Box) snapshotLocked(ctx context.Context, name string, memory bool) (snapshotRecord, error) {
	snaps, err := b.rt.loadSnapshots()
	if err != nil {
		return snapshotRecord{}, err
	}
	if name != "" {
		if s, ok := findSnapshot(snaps, name); ok {
			return snapshotRecord{}, errdefs.New(errdefs.AlreadyExists, "a snapshot named %q already exists (of box %s): pick another name or remove it", name, s.Box)
		}
	}
	sn, err := b.rt.snapshotter(b.cfg.Isolation)
	if err != nil {
		return snapshotRecord{}, err
	}
	b.mu.Lock()
	if b.removed {
		b.mu.Unlock()
		return snapshotRecord{}, errdefs.New(errdefs.NotFound, "box %s was removed", b.cfg.ID)
	}
	b.refreshLocked()
	elsewhere := b.inst == nil && b.st.State == StateRunning
	b.mu.Unlock()
	if elsewhere {
		// Detached, started by another process: follow it from here too.
		if err := b.startAttachOnly(ctx); err != nil {
			return snapshotRecord{}, err
		}
	}
	b.mu.Lock()
	inst, base := b.inst, b.st.Base
	b.mu.Unlock()
	var msn backend.MemorySnapshotter
	if memory {
		ok := false
		if msn, ok = sn.(backend.MemorySnapshotter); !ok {
			return snapshotRecord{}, errdefs.New(errdefs.Unsupported, "memory snapshots: the %s backend of this host has none", b.cfg.Isolation)
		}
		if inst == nil {
			return snapshotRecord{}, errdefs.New(errdefs.FailedPrecondition, "memory snapshot: box %s is not running (a memory snapshot is of a running VM; take a disk snapshot of a stopped box)", b.cfg.ID)
		}
	}
	_, spec, err := b.prepare(ctx)
	if err != nil {
		return snapshotRecord{}, err
	}
	if inst != nil && b.cfg.Isolation == IsolationVM && !memory {
		b.guestSync(ctx) // a memory snapshot holds the page cache: no need
	}
	rec := snapshotRecord{
		ID: newID(), Name: name, Parent: base, Box: b.cfg.ID, BoxName: b.cfg.Name,
		Isolation: b.cfg.Isolation, Image: b.cfg.Image, ImageID: b.cfg.ImageID, Platform: b.cfg.Platform,
		ImageEntrypoint: b.cfg.ImageEntrypoint, ImageCmd: b.cfg.ImageCmd, CPUs: b.cfg.CPUs, MemoryMiB: b.cfg.MemoryMiB,
		Env: b.cfg.Env, WorkingDir: b.cfg.WorkingDir, User: b.cfg.User, CreatedAt: time.Now().UTC(),
	}
	dir := b.rt.snapshotDir(rec.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return snapshotRecord{}, errdefs.Wrap(errdefs.Internal, err, "snapshot dir")
	}
	var res backend.SnapshotResult
	if memory {
		spec.Network = b.cfg.Network.Enabled
		res, err = msn.SnapshotMemory(ctx, spec, inst, dir)
		rec.Memory = err == nil
	} else {
		res, err = sn.Snapshot(ctx, spec, inst, dir)
	}
	if err != nil && res.OnTop {
		// The box runs on the layer already: keep it as a hidden disk
		// snapshot under the box.
		rec.Name, rec.Size = "", diskUsage(dir)
		if werr := writeJSONAtomic(filepath.Join(dir, "snapshot.json"), &rec, true); werr != nil {
			b.rt.logf("libbox: box %s: write snapshot record: %v", b.cfg.ID, werr)
		}
		b.setBase(rec.ID)
		return snapshotRecord{}, err
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return snapshotRecord{}, err
	}
	rec.Written = res.Written
	rec.Size = diskUsage(dir)
	if err := writeJSONAtomic(filepath.Join(dir, "snapshot.json"), &rec, true); err != nil {
		// Too late to undo a moved layer: keep it, hidden, under the box.
		b.rt.logf("libbox: box %s: write snapshot record: %v", b.cfg.ID, err)
		if !res.OnTop {
			_ = os.RemoveAll(dir)
		}
		return snapshotRecord{}, errdefs.Wrap(errdefs.Internal, err, "write snapshot record")
	}
	if res.OnTop {
		b.setBase(rec.ID)
	}
	return rec, nil
}

// setBase records the snapshot the box's writable layer sits on.
func (b *Box) setBase(id string) {
	b.mu.Lock()
	b.st.Base = id
	b.persistLocked()
	b.mu.Unlock()
}

// guestSync asks a running box to flush its file systems (best effort:
// the image may have no sync command; the snapshot is then as consistent
// as after a power cut).
func (b *Box) guestSync(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	p, err := b.Exec(sctx, Command{Args: []string{"sync"}, Timeout: 30 * time.Second})
	if err != nil {
		return
	}
	_, _ = p.Wait(sctx)
}

// diskUsage is the disk space the files under dir take.
func diskUsage(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		}
		return nil
	})
	return n
}

func (r *Runtime) snapshotInfo(s snapshotRecord, snaps map[string]snapshotRecord, deps map[string][]string) SnapshotInfo {
	info := SnapshotInfo{
		Name: s.Name, ID: s.ID, Box: s.Box, BoxName: s.BoxName, Isolation: s.Isolation, Image: s.Image,
		ImageID: s.ImageID, Parent: s.Parent, CreatedAt: s.CreatedAt, Size: s.Size, Written: s.Written,
		UsedBy: deps[s.ID], Memory: s.Memory,
	}
	p, ok := snaps[s.Parent]
	if !ok && snaps == nil && s.Parent != "" {
		ok = readJSON(filepath.Join(r.snapshotDir(s.Parent), "snapshot.json"), &p) == nil
	}
	if ok {
		info.Parent = snapshotLabel(p)
	}
	return info
}

// Snapshots lists the named snapshots of the home, oldest first, with the
// disk space each layer takes, its parent and what depends on it.
func (r *Runtime) Snapshots(ctx context.Context) ([]SnapshotInfo, error) {
	if err := r.checkOpen(); err != nil {
		return nil, err
	}
	unlock, err := r.storeLock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	snaps, err := r.loadSnapshots()
	if err != nil {
		return nil, err
	}
	deps, err := r.dependents(snaps)
	if err != nil {
		return nil, err
	}
	out := []SnapshotInfo{}
	for _, s := range snaps {
		if s.Name != "" {
			out = append(out, r.snapshotInfo(s, snaps, deps))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// RemoveSnapshot deletes a snapshot. While a box or another snapshot sits
// on it, it is refused (FailedPrecondition) unless force: then its name
// is freed at once and its layer kept, hidden, until nothing depends on it.
func (r *Runtime) RemoveSnapshot(ctx context.Context, name string, force bool) error {
	if err := r.checkOpen(); err != nil {
		return err
	}
	unlock, err := r.storeLock()
	if err != nil {
		return err
	}
	defer unlock()
	s, err := r.snapshotByName(name)
	if err != nil {
		return err
	}
	snaps, err := r.loadSnapshots()
	if err != nil {
		return err
	}
	deps, err := r.dependents(snaps)
	if err != nil {
		return err
	}
	if d := deps[s.ID]; len(d) > 0 {
		if !force {
			return errdefs.New(errdefs.FailedPrecondition, "snapshot %q is in use by %v: remove those first, or remove with force (its layer stays until they are gone)", name, d)
		}
		s.Name = ""
		if err := writeJSONAtomic(filepath.Join(r.snapshotDir(s.ID), "snapshot.json"), &s, true); err != nil {
			return errdefs.Wrap(errdefs.Internal, err, "hide snapshot %q", name)
		}
		return nil
	}
	if err := r.deleteSnapshot(s.ID); err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "remove snapshot %q", name)
	}
	r.collectHidden()
	return nil
}

// Restore rolls the box's file system back to a snapshot: its writable
// layer is discarded and it then sits on the snapshot. The snapshot must
// be of the same image and isolation (one taken of this box, or of a box
// cloned from the same lineage). The box must be stopped: Restore refuses
// a running box (FailedPrecondition) rather than stop its processes.
func (b *Box) Restore(ctx context.Context, name string) error {
	if err := b.rt.checkOpen(); err != nil {
		return err
	}
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.mu.Lock()
	b.refreshLocked()
	removed, running := b.removed, b.inst != nil || b.st.State == StateRunning
	b.mu.Unlock()
	if removed {
		return errdefs.New(errdefs.NotFound, "box %s was removed", b.cfg.ID)
	}
	if running {
		return errdefs.New(errdefs.FailedPrecondition, "box %s is running: stop it before restoring a snapshot", b.cfg.ID)
	}
	unlock, err := b.rt.storeLock()
	if err != nil {
		return err
	}
	defer unlock()
	s, err := b.rt.snapshotByName(name)
	if err != nil {
		return err
	}
	if s.Isolation != b.cfg.Isolation || s.ImageID != b.cfg.ImageID {
		return errdefs.New(errdefs.InvalidArgument, "snapshot %q is of a %s box of image %s; box %s is a %s box of image %s: restore a snapshot of this box",
			name, s.Isolation, s.Image, b.cfg.ID, b.cfg.Isolation, b.cfg.Image)
	}
	if err := b.resetOnto(ctx, s.ID); err != nil {
		return err
	}
	b.rt.collectHidden()
	return nil
}

// resetOnto makes the stopped box's file system the snapshot id (its
// writable layer empty). The caller holds b.opMu and the store lock.
func (b *Box) resetOnto(ctx context.Context, id string) error {
	sn, err := b.rt.snapshotter(b.cfg.Isolation)
	if err != nil {
		return err
	}
	_, spec, err := b.prepare(ctx)
	if err != nil {
		return err
	}
	if spec.Layers, err = b.rt.layerDirs(id); err != nil {
		return err
	}
	if err := sn.Reset(ctx, spec); err != nil {
		return err
	}
	b.setBase(id)
	return nil
}

// cloneSource resolves BoxOptions.From: a snapshot name, else a box (of
// which a hidden snapshot is taken). The caller holds the store lock and,
// for a box, its opMu (lockSource).
func (r *Runtime) cloneSource(ctx context.Context, from string, src *Box) (snapshotRecord, error) {
	if src == nil {
		return r.snapshotByName(from)
	}
	return src.snapshotLocked(ctx, "", false)
}

// lockSource returns the box From names when it is not a snapshot, with
// its opMu held (release with unlock).
func (r *Runtime) lockSource(ctx context.Context, from string) (src *Box, unlock func(), err error) {
	snaps, err := r.loadSnapshots()
	if err != nil {
		return nil, nil, err
	}
	if _, ok := findSnapshot(snaps, from); ok {
		return nil, func() {}, nil
	}
	b, err := r.Get(ctx, from)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, nil, errdefs.New(errdefs.NotFound, "from %q: no snapshot or box of that name (list them with `box snapshot ls` and `box ls -a`)", from)
		}
		return nil, nil, err
	}
	b.opMu.Lock()
	return b, b.opMu.Unlock, nil
}

// createFrom is Create for BoxOptions.From: a new box on a snapshot's
// layers (taking a hidden snapshot first when From names a box).
func (r *Runtime) createFrom(ctx context.Context, o BoxOptions) (*Box, error) {
	src, release, err := r.lockSource(ctx, o.From)
	if err != nil {
		return nil, err
	}
	defer release()
	unlock, err := r.storeLock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	rec, err := r.cloneSource(ctx, o.From, src)
	if err != nil {
		return nil, err
	}
	b, err := r.cloneBox(ctx, o, rec)
	if err != nil {
		r.collectHidden() // the hidden snapshot taken for it, if any
		return nil, err
	}
	return b, nil
}

// cloneBox makes the box of a clone. The caller holds the store lock.
func (r *Runtime) cloneBox(ctx context.Context, o BoxOptions, rec snapshotRecord) (*Box, error) {
	if o.Isolation == "" {
		o.Isolation = rec.Isolation
	}
	if o.Isolation != rec.Isolation {
		return nil, errdefs.New(errdefs.InvalidArgument, "from %q: it is a %s snapshot; a clone has the isolation of its source (leave isolation unset)", o.From, rec.Isolation)
	}
	if o.Image != "" && o.Image != rec.Image && o.Image != rec.ImageID {
		return nil, errdefs.New(errdefs.InvalidArgument, "from %q: it is of image %s, not %s; a clone has the image of its source (leave image unset)", o.From, rec.Image, o.Image)
	}
	if err := validateOptions(&o); err != nil {
		return nil, err
	}
	cfg := boxConfig{
		ID: newID(), Name: o.Name, Image: rec.Image, ImageID: rec.ImageID, Platform: rec.Platform,
		ImageEntrypoint: rec.ImageEntrypoint, ImageCmd: rec.ImageCmd, Isolation: rec.Isolation,
		CPUs: cmp.Or(o.CPUs, rec.CPUs), MemoryMiB: cmp.Or(o.MemoryMiB, rec.MemoryMiB),
		Env: append(append([]string{}, rec.Env...), o.Env...), WorkingDir: cmp.Or(o.WorkingDir, rec.WorkingDir),
		User: rec.User, Network: o.Network, Volumes: o.Volumes, AutoRemove: o.AutoRemove, Detach: o.Detach, ColdBoot: o.ColdBoot,
		CreatedAt: time.Now().UTC(),
	}
	b, err := r.commitBox(cfg, boxState{State: StateCreated, Base: rec.ID})
	if err != nil {
		return nil, err
	}
	b.opMu.Lock()
	err = b.resetOnto(ctx, rec.ID)
	b.opMu.Unlock()
	if err != nil {
		_ = os.Remove(filepath.Join(b.dir, "config.json"))
		_ = removeBoxDir(b.dir)
		r.forget(cfg.ID)
		return nil, err
	}
	return b, nil
}
