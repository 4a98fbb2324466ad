package bootparam

// SandboxSpec is written by the host's sandbox backend and read by the
// agent when it starts as PID 1 of fresh namespaces.
type SandboxSpec struct {
	Lower    string          `json:"lower"`  // read-only image root
	Upper    string          `json:"upper"`  // per-box writable layer
	Work     string          `json:"work"`   // overlay work dir (same fs as upper)
	Rootfs   string          `json:"rootfs"` // mount point for the merged root
	Hostname string          `json:"hostname"`
	Volumes  []SandboxVolume `json:"volumes"`
	Listen   string          `json:"listen"`    // e.g. "fd:3"
	UserNS   bool            `json:"user_ns"`   // running in a user namespace
	KeepCaps []int           `json:"keep_caps"` // capability numbers kept in the bounding set
}

// SandboxVolume is a bind mount from the host into the box.
type SandboxVolume struct {
	Host     string `json:"host"`
	Box      string `json:"box"`
	ReadOnly bool   `json:"read_only"`
}
