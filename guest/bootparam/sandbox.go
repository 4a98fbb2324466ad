package bootparam

import (
	"fmt"
	"strconv"
	"strings"
)

// LaunchProtocol is the version of the contract between a host library and
// the agent binary it starts: the SandboxSpec and the boot socket's
// messages, the fork server's messages (internal/forkserver) and the agent
// protocol (guest/agentpb). It is bumped on every incompatible change of
// one of them, never on a rebuild, so a rebuild of one source still
// matches. Both sides state it at every sandbox start (SandboxSpec.Protocol
// one way, Hello the other) and refuse another: a stale agent binary fails
// the start with a message naming both versions, not midway.
const LaunchProtocol = 1

// Hello is the first message a sandbox agent sends on its boot socket,
// right after it read its spec: the launch protocol it speaks.
func Hello(version int) []byte {
	return []byte(fmt.Sprintf("%s%d", helloPrefix, version))
}

const helloPrefix = "box-agent launch protocol "

// ParseHello returns the version a Hello message states; ok is false for
// any other message (an agent older than the launch protocol sends none,
// or another one).
func ParseHello(b []byte) (version int, ok bool) {
	v, found := strings.CutPrefix(string(b), helloPrefix)
	if !found {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

// SandboxSpec is written by the host's sandbox backend and read by the
// agent when it starts as PID 1 of fresh namespaces. Relative paths are
// relative to the agent's starting working directory (the box dir).
type SandboxSpec struct {
	// Protocol is the host's LaunchProtocol; an agent that speaks another
	// one says its own (Hello) and exits.
	Protocol int    `json:"protocol"`
	Lower    string `json:"lower"` // read-only image root (unless BootFDs has "lower")
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
	// Before that, as soon as it has read this spec, the agent sends its
	// Hello on it, which the host reads once its part of the boot is done.
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
