// Package backend defines what an isolation backend (namespace sandbox,
// QEMU micro-VM, Virtualization.framework VM) provides to the runtime: a
// running agent reachable over one byte stream, and a way to stop it.
//
// A backend never speaks the agent protocol beyond what readiness needs and
// never touches the box store: the runtime owns state, the backend owns
// processes.
package backend

import (
	"context"
	"encoding/json"
	"net"
)

// Volume is a host directory shared into the box.
type Volume struct {
	HostPath string `json:"host"`
	BoxPath  string `json:"box"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// Spec is everything a backend needs to start one box.
type Spec struct {
	ID        string       // box id
	Dir       string       // the box's directory (0700); the backend keeps its files here
	ImageRoot string       // read-only root directory of the image
	ImageID   string       // stable id of the image content (digest), for caches
	AgentPath string       // host path of the static box-agent binary
	CPUs      int          // 0: backend default
	MemoryMiB int          // 0: backend default
	Volumes   []Volume     // validated: absolute paths, host paths exist
	Network   bool         // the box has a network (NetLink says how to attach it)
	NetLink   *NetworkLink // set when Network
	Detach    bool         // the box must outlive the host process
	Hostname  string
	// FromTemplate lets a VM backend start the box by restoring a memory
	// snapshot of an already booted box of the same configuration (a
	// template) instead of booting, when one exists and the box's disk is
	// new. The caller must then give the agent its identity (agentpb
	// Identify) before anything else runs: see Templates.
	FromTemplate bool
	// ColdBoot: a VM boots its kernel, even when its disk sits on a memory
	// snapshot it could resume (see MemorySnapshotter).
	ColdBoot bool
	// Layers are the box's read-only layers, topmost first: directories of
	// snapshots (see Snapshotter). Empty: the box runs on the image alone.
	Layers []string
}

// Backend starts boxes and reattaches to boxes that outlived their host.
type Backend interface {
	// Name is the isolation name ("sandbox", "vm").
	Name() string
	// Start launches the box and returns once its agent can be dialled
	// (the runtime then waits for Ping). ctx bounds the start only:
	// cancelling it after Start returned must not stop the box.
	Start(ctx context.Context, spec Spec) (Instance, error)
	// Attach reconnects to a box a previous host process started (detached),
	// from the state Instance.State returned. It returns an error of class
	// NotFound when the box is no longer running.
	Attach(ctx context.Context, spec Spec, state json.RawMessage) (Instance, error)
}

// Instance is one running box.
type Instance interface {
	// Dial opens a new byte stream to the agent.
	Dial(ctx context.Context) (net.Conn, error)
	// Done is closed once the box's processes are gone (the agent, QEMU).
	Done() <-chan struct{}
	// Stop waits, bounded by ctx, for the box to exit after the agent was
	// asked to shut down, then escalates (QMP quit, SIGKILL) until it is gone.
	// It returns after every process, fd and mount of the instance is
	// released. Idempotent.
	Stop(ctx context.Context) error
	// Kill ends the box at once (SIGKILL) without waiting. Idempotent.
	Kill() error
	// Release stops tracking a box that must keep running (a detached box
	// when its Runtime closes): goroutines, fds and the process handle of
	// the instance are released, Done is closed, the box is left alone.
	Release()
	// State is what Attach needs later: a JSON object that includes the
	// ProcState fields "pid" and "start_time" of the box's main process.
	State() json.RawMessage
	// Info describes the instance for Box.Info (accelerator, limits
	// enforced, pid ...).
	Info() map[string]any
}

// ProcState is the part of an instance's State every backend records, so
// the runtime can tell whether a box outlived its host (see ProcAlive).
type ProcState struct {
	Pid       int    `json:"pid"`
	StartTime uint64 `json:"start_time"` // field 22 of /proc/<pid>/stat
}

// Templates is implemented by backends that can start a box by restoring
// a memory snapshot of an already booted box of the same configuration (a
// VM template) instead of booting its kernel.
//
// A template is keyed by everything the snapshot depends on (image,
// kernel, agent, CPUs, memory, machine and accelerator, device
// configuration); a change of any of them makes a new key, so an old
// template is never restored into a machine it does not fit.
type Templates interface {
	// Warm builds the template for spec's configuration unless it exists
	// (spec.ID, Dir and Hostname are not part of it). It boots a VM of its
	// own, which it stops before returning; ctx bounds the whole build. It
	// reports whether it built one. Safe to call concurrently and from
	// several processes: one builds, the others wait (wait false: return
	// at once). Boxes that cannot use a template (volumes, network) get
	// FailedPrecondition.
	Warm(ctx context.Context, spec Spec, wait bool) (built bool, err error)
}

// Restored is implemented by instances that may have started from a
// template: Restored reports whether this one did (its agent then needs
// its identity before any exec).
type Restored interface {
	Restored() bool
}
