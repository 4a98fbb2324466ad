// Package boot prepares the world the agent serves in: PID 1 of a VM
// (mounts, kernel modules, root disk, volumes) or PID 1 of a namespace
// sandbox (overlay root, pivot_root, minimal /dev, dropped privileges).
//
// It runs once, before the agent serves its first request, on the main
// goroutine. It must never be called from a request: it changes
// process-global state (mounts, the root, the working directory).
package boot

// VMConfig is what VM boot hands to the agent.
type VMConfig struct {
	Listen   string // listen address for the agent (serial:DEV, vsock:PORT)
	Root     string // directory processes are spawned into (Chroot)
	Hostname string
}

// SandboxConfig is what sandbox boot hands to the agent.
type SandboxConfig struct {
	Listen   string
	Hostname string
	// SpawnSetup drops privileges on the agent's spawn thread (see
	// agent.Options.SpawnSetup).
	SpawnSetup func() error
	// SpawnGate yields once the boot work still running in the background
	// ended (nil) or failed; no process may be spawned before (see
	// agent.Options.SpawnGate).
	SpawnGate <-chan error
}
