package libbox

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"sync"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/agentpb"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/image"
)

// VM templates: a VM box whose configuration has a template starts by
// restoring a memory snapshot of an already booted agent instead of
// booting its kernel (libbox/qemu template.go). The runtime builds the
// template in the background after the first boot of a configuration, or
// when asked (Warm), and gives every restored box its identity before
// anything runs in it (identify).

// warmTimeout bounds one background template build.
const warmTimeout = 10 * time.Minute

// warmer owns the background template builds of a Runtime. Its zero value
// is ready; close cancels the builds and waits for them.
type warmer struct {
	mu sync.Mutex
	// busy holds the image ids, CPUs and memory being built; ctx and
	// cancel are made by the first build; closed refuses new builds. All
	// guarded by mu.
	busy   map[warmKey]bool
	ctx    context.Context
	cancel context.CancelFunc
	closed bool
	wg     sync.WaitGroup
}

type warmKey struct {
	image     string
	cpus, mem int
}

// start runs build in the background unless a build of k runs or the
// warmer is closed.
func (w *warmer) start(k warmKey, build func(context.Context)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.busy[k] {
		return
	}
	if w.ctx == nil {
		w.ctx, w.cancel = context.WithCancel(context.Background())
		w.busy = map[warmKey]bool{}
	}
	w.busy[k] = true
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		ctx, cancel := context.WithTimeout(w.ctx, warmTimeout)
		defer cancel()
		build(ctx)
		w.mu.Lock()
		delete(w.busy, k)
		w.mu.Unlock()
	}()
}

func (w *warmer) close() {
	w.mu.Lock()
	w.closed = true
	if w.cancel != nil {
		w.cancel()
	}
	w.mu.Unlock()
	w.wg.Wait()
}

// warmLater builds, in the background, the template of a VM box that just
// booted when templates are on and it has none yet (the backend returns at
// once when one exists or another build holds the key).
func (r *Runtime) warmLater(be backend.Backend, inst backend.Instance, spec backend.Spec) {
	t, ok := be.(backend.Templates)
	if !ok || !spec.FromTemplate || restored(inst) {
		return
	}
	r.warm.start(warmKey{spec.ImageID, spec.CPUs, spec.MemoryMiB}, func(ctx context.Context) {
		if _, err := t.Warm(ctx, spec, false); err != nil && !errdefs.IsFailedPrecondition(err) && ctx.Err() == nil {
			r.logf("libbox: building the VM template of image %s: %v", spec.ImageID, err)
		}
	})
}

func restored(inst backend.Instance) bool {
	r, ok := inst.(backend.Restored)
	return ok && r.Restored()
}

// identify gives a box restored from a template its own identity (fresh
// random seed, the host's clock, its hostname and id) before Start
// returns, so nothing runs in it with the template's.
func (b *Box) identify(ctx context.Context, inst backend.Instance, client agentpb.AgentClient, spec backend.Spec) error {
	if !restored(inst) {
		return nil
	}
	seed := make([]byte, 64)
	if _, err := rand.Read(seed); err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "box %s: random seed", b.cfg.ID)
	}
	ictx, cancel := context.WithTimeout(ctx, b.rt.bootTimeout(b.cfg.Isolation))
	defer cancel()
	_, err := client.Identify(ictx, &agentpb.IdentifyRequest{
		Seed: seed, UnixNanos: time.Now().UnixNano(), Hostname: spec.Hostname, BoxId: spec.ID,
	})
	if err != nil {
		return errdefs.Wrap(errdefs.CodeOf(err), err, "box %s: giving the restored VM its identity", b.cfg.ID)
	}
	return nil
}

// Warm builds the VM template of image for boxes created with opts (only
// CPUs, MemoryMiB and Platform matter), so that they start by restoring
// it instead of booting. It returns once the template exists: at once
// when it did already. Boxes with volumes or a network cannot use a
// template (FailedPrecondition); a runtime without VM support returns
// Unsupported.
func (r *Runtime) Warm(ctx context.Context, ref string, opts BoxOptions) error {
	if err := r.checkOpen(); err != nil {
		return err
	}
	if ref == "" {
		ref = "busybox"
	}
	opts.Image, opts.Isolation = ref, IsolationVM
	if err := validateOptions(&opts); err != nil {
		return err
	}
	be, err := r.backend(IsolationVM)
	if err != nil {
		return err
	}
	t, ok := be.(backend.Templates)
	if !ok {
		return errdefs.New(errdefs.Unsupported, "VM templates: the %s backend of this platform has none", be.Name())
	}
	img, err := r.images.Get(ctx, ref, image.Options{Platform: opts.Platform, Progress: opts.Progress})
	if err != nil {
		return err
	}
	agentPath, err := r.agent()
	if err != nil {
		return err
	}
	spec := backend.Spec{
		ID: "warm", Dir: filepath.Join(r.home, "vm"), ImageRoot: img.Root, ImageID: img.ID, AgentPath: agentPath,
		CPUs: opts.CPUs, MemoryMiB: opts.MemoryMiB, Volumes: opts.Volumes, Network: opts.Network.Enabled,
	}
	_, err = t.Warm(ctx, spec, true)
	return err
}
