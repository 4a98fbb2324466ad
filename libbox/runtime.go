package libbox

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/image"
	"github.com/libbox/libbox/libbox/internal/agentbin"
)

// Options configure a Runtime. Open fills each field left zero from its
// LIBBOX_* variable, once (see WithEnv); nothing below Open reads the
// environment.
type Options struct {
	// Home holds images and boxes. Default: $LIBBOX_HOME, else
	// ~/.local/share/libbox.
	Home string
	// Logf receives one-line warnings (nil: the standard logger).
	Logf func(format string, args ...any)
	// BootTimeout bounds how long a starting box may take to answer.
	// Default: $LIBBOX_BOOT_TIMEOUT (seconds, "1.5", or a Go duration,
	// "2m"), else 120 s for VM boxes and 30 s for sandboxes.
	BootTimeout time.Duration
	// Accel forces the accelerator rung of VM boxes on Linux: "kvm",
	// "tcg", "microvm-kvm", "pc-kvm" or "pc-tcg" (checked when a VM box
	// starts). Default: $LIBBOX_ACCEL, else probed once per host, cached.
	Accel string
	// Kernel is the guest kernel of VM boxes and KernelModules its modules
	// directory (/lib/modules/VERSION; may be empty). Default:
	// $LIBBOX_KERNEL and $LIBBOX_KERNEL_MODULES, else (Linux) the kernel
	// ./build.sh deps unpacks, else the newest in /boot. Required on macOS.
	Kernel, KernelModules string
	// Agent is a static box-agent binary to run instead of the embedded
	// one. Default: $LIBBOX_AGENT.
	Agent string
	// VMDebug logs the guest kernel and the agent's boot steps to each VM
	// box's console log. Default: $LIBBOX_VM_DEBUG=1.
	VMDebug bool
	// NoVMTemplates makes every VM box boot its kernel: no box restores
	// a VM template, none is built in the background (Runtime.Warm still
	// builds one). Default: $LIBBOX_VM_TEMPLATES=0 (1, the default, uses
	// them).
	NoVMTemplates bool
	// Registries are registry credentials, plain-HTTP registries and
	// mirrors. Each part left nil takes $LIBBOX_REGISTRY_AUTH,
	// $LIBBOX_INSECURE_REGISTRIES or $LIBBOX_REGISTRY_MIRRORS (an empty,
	// non-nil part ignores the variable).
	Registries image.Registries
}

// Volume shares a host directory (or file) into a box.
type Volume = backend.Volume

// BoxOptions describe a new box. Zero values take the defaults.
type BoxOptions struct {
	Image      string   // default "busybox" (builtin, no network); also an image ID or its prefix
	Platform   string   // "os/arch[/variant]" of a multi-arch image; default: the host's
	Name       string   // unique; default: none (the id is used)
	Isolation  string   // "vm" (default) or "sandbox"
	CPUs       int      // default: backend's
	MemoryMiB  int      // default: backend's
	Env        []string // KEY=VALUE, for every exec (after the image's)
	WorkingDir string   // default working dir of execs (default: image's, else /)
	Network    Network  // default off
	Volumes    []Volume
	AutoRemove bool // remove the box when it stops
	Detach     bool // the box outlives this process and this Runtime
	// ColdBoot makes a VM box boot its kernel even when a VM template of
	// its configuration exists (see Runtime.Warm), or, for a clone, when
	// the snapshot it comes from holds the source's memory.
	ColdBoot bool
	// From clones a snapshot (by name) or a box (by id or name; a hidden
	// snapshot of it is taken, also while it runs): the new box's file
	// system starts as the source's, shares its layers (nothing is
	// copied) and is independent of it. Image, isolation, environment and
	// working dir come from the source; Image and Isolation, when set,
	// must match it.
	From string
	// Progress receives image pull progress (may be nil).
	Progress func(image.Progress)
}

// Runtime is a handle on a libbox home. Safe for concurrent use.
type Runtime struct {
	opts   Options // as filled by Open (environment read, home absolute)
	home   string
	logf   func(string, ...any)
	images *image.Store

	mu sync.Mutex
	// boxes holds the one live *Box per id opened by this Runtime. Guarded by mu.
	boxes map[string]*Box
	// backends are created on first use. Guarded by mu.
	backends map[string]backend.Backend
	closed   bool // guarded by mu

	// warm owns the background template builds (see warmLater).
	warm warmer

	agentOnce sync.Once
	agentPath string
	agentErr  error

	netdOnce sync.Once
	netdPath string
	netdErr  error
}

// Open opens (creating if needed) a libbox home.
func Open(opts Options) (*Runtime, error) {
	opts, err := opts.WithEnv()
	if err != nil {
		return nil, err
	}
	home := opts.Home
	for _, d := range []string{home, filepath.Join(home, "boxes"), filepath.Join(home, "bin")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, errdefs.Wrap(errdefs.InvalidArgument, err, "cannot create libbox home %s (set LIBBOX_HOME to a writable directory)", home)
		}
	}
	images, err := image.Open(filepath.Join(home, "images"), opts.Registries)
	if err != nil {
		return nil, err
	}
	if opts.Logf == nil {
		opts.Logf = log.Printf
	}
	logf := opts.Logf
	return &Runtime{
		opts:     opts,
		home:     home,
		logf:     logf,
		images:   images,
		boxes:    make(map[string]*Box),
		backends: make(map[string]backend.Backend),
	}, nil
}

// Home is the runtime's home directory.
func (r *Runtime) Home() string { return r.home }

func (r *Runtime) agent() (string, error) {
	r.agentOnce.Do(func() {
		if r.opts.Agent != "" {
			r.agentPath = r.opts.Agent
			return
		}
		r.agentPath, r.agentErr = agentbin.Path(filepath.Join(r.home, "bin"))
		if r.agentErr != nil {
			r.agentErr = errdefs.Wrap(errdefs.Internal, r.agentErr, "install box-agent")
		}
	})
	return r.agentPath, r.agentErr
}

// netd returns the path of the network helper of detached boxes.
func (r *Runtime) netd() (string, error) {
	r.netdOnce.Do(func() {
		r.netdPath, r.netdErr = agentbin.NetdPath(filepath.Join(r.home, "bin"))
		if r.netdErr != nil {
			r.netdErr = errdefs.Wrap(errdefs.Internal, r.netdErr, "install box-netd")
		}
	})
	return r.netdPath, r.netdErr
}

func (r *Runtime) backend(isolation string) (backend.Backend, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if b, ok := r.backends[isolation]; ok {
		return b, nil
	}
	b, err := newBackend(isolation, r.opts)
	if err != nil {
		return nil, err
	}
	r.backends[isolation] = b
	return b, nil
}

func (r *Runtime) checkOpen() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errdefs.New(errdefs.FailedPrecondition, "runtime is closed")
	}
	return nil
}

// Create makes a new box (pulling its image if needed). It does not start it.
func (r *Runtime) Create(ctx context.Context, o BoxOptions) (*Box, error) {
	if err := r.checkOpen(); err != nil {
		return nil, err
	}
	if o.From != "" {
		return r.createFrom(ctx, o)
	}
	if o.Image == "" {
		o.Image = "busybox"
	}
	if o.Isolation == "" {
		o.Isolation = IsolationVM
	}
	if err := validateOptions(&o); err != nil {
		return nil, err
	}
	if _, err := r.backend(o.Isolation); err != nil {
		return nil, err
	}
	img, err := r.images.Get(ctx, o.Image, image.Options{Platform: o.Platform, Progress: o.Progress})
	if err != nil {
		return nil, err
	}
	cfg := boxConfig{
		ID:              newID(),
		Name:            o.Name,
		Image:           o.Image,
		ImageID:         img.ID,
		Platform:        o.Platform,
		ImageEntrypoint: img.Config.Entrypoint,
		ImageCmd:        img.Config.Cmd,
		Isolation:       o.Isolation,
		CPUs:            o.CPUs,
		MemoryMiB:       o.MemoryMiB,
		Env:             append(append([]string{}, img.Config.Env...), o.Env...),
		WorkingDir:      o.WorkingDir,
		User:            img.Config.User,
		Network:         o.Network,
		Volumes:         o.Volumes,
		AutoRemove:      o.AutoRemove,
		Detach:          o.Detach,
		ColdBoot:        o.ColdBoot,
		CreatedAt:       time.Now().UTC(),
	}
	if cfg.WorkingDir == "" {
		cfg.WorkingDir = img.Config.WorkingDir
	}
	if cfg.Name == "" {
		// Nothing to check against other boxes: its dir, named by a new
		// random id, is its own (boxes come and go without waiting
		// for each other's disk writes).
		return r.commitBox(cfg, boxState{State: StateCreated})
	}
	unlock, err := r.storeLock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return r.commitBox(cfg, boxState{State: StateCreated})
}

// commitBox writes a new box to the store. The caller holds the store lock
// when the box has a name (unique in the home) or a base snapshot (which
// removing a box may collect).
func (r *Runtime) commitBox(cfg boxConfig, st boxState) (*Box, error) {
	if cfg.Name != "" {
		cfgs, err := r.loadConfigs()
		if err != nil {
			return nil, err
		}
		for _, c := range cfgs {
			if c.Name == cfg.Name {
				return nil, errdefs.New(errdefs.AlreadyExists, "a box named %q already exists (id %s): pick another name or remove it", cfg.Name, c.ID)
			}
		}
	}
	dir := r.boxDir(cfg.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "create box dir")
	}
	if err := writeState(dir, &st); err != nil {
		os.RemoveAll(dir)
		return nil, errdefs.Wrap(errdefs.Internal, err, "write box state")
	}
	// config.json last: a box exists once its config does. It is
	// written once and is the box, so it is fsynced.
	if err := writeJSONAtomic(filepath.Join(dir, "config.json"), &cfg, true); err != nil {
		os.RemoveAll(dir)
		return nil, errdefs.Wrap(errdefs.Internal, err, "write box config")
	}
	b := newBox(r, cfg, st)
	r.mu.Lock()
	r.boxes[cfg.ID] = b
	r.mu.Unlock()
	return b, nil
}

func validateOptions(o *BoxOptions) error {
	switch o.Isolation {
	case IsolationVM, IsolationSandbox:
	default:
		return errdefs.New(errdefs.InvalidArgument, "isolation %q: want \"vm\" or \"sandbox\"", o.Isolation)
	}
	if o.Name != "" && !nameRE.MatchString(o.Name) {
		return errdefs.New(errdefs.InvalidArgument, "box name %q: use 1-63 letters, digits, '_', '.', '-', starting with a letter or digit", o.Name)
	}
	if o.CPUs < 0 || o.CPUs > 256 {
		return errdefs.New(errdefs.InvalidArgument, "cpus %d: want 0 (default) to 256", o.CPUs)
	}
	if o.MemoryMiB < 0 || (o.MemoryMiB > 0 && o.MemoryMiB < 32) {
		return errdefs.New(errdefs.InvalidArgument, "memory %d MiB: want 0 (default) or at least 32", o.MemoryMiB)
	}
	if err := validateNetwork(o.Network, o.Isolation); err != nil {
		return err
	}
	for _, kv := range o.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return errdefs.New(errdefs.InvalidArgument, "environment entry %q: want KEY=VALUE", kv)
		}
	}
	if o.WorkingDir != "" && !filepath.IsAbs(o.WorkingDir) {
		return errdefs.New(errdefs.InvalidArgument, "working dir %q must be absolute", o.WorkingDir)
	}
	for i, v := range o.Volumes {
		if !filepath.IsAbs(v.HostPath) || !filepath.IsAbs(v.BoxPath) {
			return errdefs.New(errdefs.InvalidArgument, "volume %q:%q: both paths must be absolute", v.HostPath, v.BoxPath)
		}
		if strings.Contains(v.BoxPath, "..") || filepath.Clean(v.BoxPath) == "/" {
			return errdefs.New(errdefs.InvalidArgument, "volume box path %q: must not be / or contain '..'", v.BoxPath)
		}
		if _, err := os.Stat(v.HostPath); err != nil {
			return errdefs.New(errdefs.NotFound, "volume host path %q does not exist", v.HostPath)
		}
		o.Volumes[i].BoxPath = filepath.Clean(v.BoxPath)
	}
	return nil
}

// Get returns the box with that id, name or unique id prefix.
func (r *Runtime) Get(ctx context.Context, idOrName string) (*Box, error) {
	if err := r.checkOpen(); err != nil {
		return nil, err
	}
	cfg, err := r.resolve(idOrName)
	if err != nil {
		return nil, err
	}
	return r.open(cfg)
}

// open returns the live Box for cfg, loading it from the store once.
func (r *Runtime) open(cfg boxConfig) (*Box, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if b, ok := r.boxes[cfg.ID]; ok {
		return b, nil
	}
	var st boxState
	if err := readJSON(filepath.Join(r.boxDir(cfg.ID), "state.json"), &st); err != nil {
		st = boxState{State: StateStopped}
	}
	b := newBox(r, cfg, st)
	r.boxes[cfg.ID] = b
	return b, nil
}

// BoxInfo describes a box.
type BoxInfo struct {
	ID         string         `json:"id"`
	Name       string         `json:"name"`
	Image      string         `json:"image"`
	ImageID    string         `json:"image_id"`
	Isolation  string         `json:"isolation"`
	State      string         `json:"state"`
	CreatedAt  time.Time      `json:"created_at"`
	StartedAt  time.Time      `json:"started_at,omitzero"`
	CPUs       int            `json:"cpus"`
	MemoryMiB  int            `json:"memory_mib"`
	Env        []string       `json:"env,omitempty"`
	WorkingDir string         `json:"working_dir,omitempty"`
	Volumes    []Volume       `json:"volumes,omitempty"`
	AutoRemove bool           `json:"auto_remove"`
	Detach     bool           `json:"detach"`
	Dir        string         `json:"dir"`
	Error      string         `json:"error,omitempty"`
	Backend    map[string]any `json:"backend,omitempty"`
	Network    *NetworkInfo   `json:"network,omitempty"` // while running in this process
	// Snapshot is the id of the snapshot layer the box's file system sits
	// on (empty: the image alone).
	Snapshot string `json:"snapshot,omitempty"`
}

// List describes every box of the home, oldest first. A box whose
// processes are gone (its host crashed) is reported stopped.
func (r *Runtime) List(ctx context.Context) ([]BoxInfo, error) {
	if err := r.checkOpen(); err != nil {
		return nil, err
	}
	cfgs, err := r.loadConfigs()
	if err != nil {
		return nil, err
	}
	out := make([]BoxInfo, 0, len(cfgs))
	for _, c := range cfgs {
		b, err := r.open(c)
		if err != nil {
			return nil, err
		}
		out = append(out, b.Info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// Remove deletes a box and its files. A running box is refused unless
// force, which stops it first.
func (r *Runtime) Remove(ctx context.Context, idOrName string, force bool) error {
	if err := r.checkOpen(); err != nil {
		return err
	}
	cfg, err := r.resolve(idOrName)
	if err != nil {
		return err
	}
	b, err := r.open(cfg)
	if err != nil {
		return err
	}
	return b.remove(ctx, force)
}

func (r *Runtime) forget(id string) {
	r.mu.Lock()
	delete(r.boxes, id)
	r.mu.Unlock()
}

// Images lists the images in the store.
func (r *Runtime) Images(ctx context.Context) ([]image.Image, error) {
	if err := r.checkOpen(); err != nil {
		return nil, err
	}
	return r.images.List(ctx)
}

// PullImage fetches an image (or refreshes it from its registry).
func (r *Runtime) PullImage(ctx context.Context, ref string, progress func(image.Progress)) (*image.Image, error) {
	if err := r.checkOpen(); err != nil {
		return nil, err
	}
	return r.Pull(ctx, ref, PullOptions{Progress: progress})
}

// RemoveImage deletes an image; refused while a box uses it, unless force.
func (r *Runtime) RemoveImage(ctx context.Context, ref string, force bool) error {
	if err := r.checkOpen(); err != nil {
		return err
	}
	return r.images.Remove(ctx, ref, force, r.imageInUse())
}

// Close stops every box this Runtime started that is not detached, waits
// for their processes, and releases the runtime. Idempotent.
func (r *Runtime) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	boxes := make([]*Box, 0, len(r.boxes))
	for _, b := range r.boxes {
		boxes = append(boxes, b)
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(boxes))
	for i, b := range boxes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.closeForRuntime()
		}()
	}
	wg.Wait()
	r.warm.close()
	// A backend may hold processes of its own (the sandbox's fork server):
	// they go once every box is stopped or released.
	r.mu.Lock()
	var closers []io.Closer
	for _, be := range r.backends {
		if c, ok := be.(io.Closer); ok {
			closers = append(closers, c)
		}
	}
	r.mu.Unlock()
	for _, c := range closers {
		_ = c.Close()
	}
	r.images.Close()
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("close runtime: %w", err)
		}
	}
	return nil
}
