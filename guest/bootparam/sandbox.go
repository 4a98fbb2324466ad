package bootparam

// SandboxSpec is written by the host's sandbox backend and read by the
// agent when it starts as PID 1 of fresh namespaces. Relative paths are
// relative to the agent's starting working directory (the box dir).
type SandboxSpec struct {
	Lower string `json:"lower"` // read-only image root (unless BootFDs has "lower")
	// Layers are read-only layers above Lower, topmost first (snapshots).
	Layers   []string        `json:"layers,omitempty"`
	Upper    string          `json:"upper"`  // per-box writable layer
	Work     string          `json:"work"`   // overlay work dir (same fs as upper)
	Rootfs   string          `json:"rootfs"` // mount point for the merged root
	Hostname string          `json:"hostname"`
	Volumes  []SandboxVolume `json:"volumes"`
	Listen   string          `json:"listen"`    // e.g. "fd:3"
	UserNS   bool            `json:"user_ns"`   // running in a user namespace
	KeepCaps []int           `json:"keep_caps"` // capability numbers kept in the bounding set
	// BootSocket is an fd the agent reads one byte (and the box dir, as an
	// fd) from before it mounts anything: the host sends them once it has
	// attached HostMounts in the agent's mount namespace, each on the dir
	// of the same name in the box dir ("lower": the image, id-mapped to the
	// box's user namespace, used as Lower; "layer.N": Layers[N], id-mapped
	// the same way; "volume.N": Volumes[N], bound from there). The host does
	// that as soon as the agent exists, while the agent's runtime starts.
	// -1: none.
	BootSocket int      `json:"boot_socket"`
	HostMounts []string `json:"host_mounts,omitempty"`
	// PidsLimit is the RLIMIT_NPROC of the box's processes (counted per
	// uid of the box's user namespace); 0: none.
	PidsLimit int `json:"pids_limit,omitempty"`
	// PidsGroupFD, when not 0, is an inherited fd of the box's pids group
	// that the agent's spawn thread joins by writing "0" to it (cgroup v1
	// "tasks", v2 "cgroup.threads" of a threaded group): what it spawns is
	// counted there, the agent's other threads are not. The host then sets
	// no PidsLimit.
	PidsGroupFD int `json:"pids_group_fd,omitempty"`
	// CloseFDs are inherited fds the agent closes once booted (the spec
	// file, the agent binary), so no box process inherits them.
	CloseFDs []int    `json:"close_fds,omitempty"`
	Net      *NetSpec `json:"net,omitempty"` // nil: loopback only
}

// SandboxVolume is a bind mount from the host into the box.
type SandboxVolume struct {
	Host     string `json:"host"`
	Box      string `json:"box"`
	ReadOnly bool   `json:"read_only"`
}
