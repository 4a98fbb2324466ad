// Package vz is the macOS micro-VM backend: each box is a
// Virtualization.framework VM (github.com/Code-Hex/vz/v3) booting the same
// kernel + libbox initramfs + ext4 root disk as the QEMU backend, with the
// agent listening on a vsock port.
//
// It is kept thin: the vz calls live in vz_darwin.go (type-checked on Linux
// by tools/darwincheck, never compiled there); everything else - the kernel
// check, command line, box disk, the connect retry and the stop sequence -
// is in this file, builds on every OS and is tested on Linux; kernel,
// initramfs, base disk, command line builder and console tail come from
// libbox/internal/vmboot, shared with the QEMU backend. It never speaks the
// agent protocol, never touches the box store, and never lets a VM outlive
// the process that started it (boxes cannot be detached).
package vz

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/internal/vmboot"
)

// AgentPort is the vsock port the agent listens on in the guest.
const AgentPort = 1024

// Options configure the backend. The runtime fills them (libbox.Options);
// the backend never reads the environment.
type Options struct {
	Home string
	Logf func(string, ...any)
	// Kernel is the guest kernel (required) and KernelModules its modules
	// directory ("" when everything needed is built in).
	Kernel, KernelModules string
	// VMDebug logs the kernel and the agent's boot steps on the console.
	VMDebug bool
}

const kernelHint = "set LIBBOX_KERNEL to an uncompressed arm64 Linux kernel Image with virtio (PCI), virtio_blk, " +
	"virtio_console, vsock (vmw_vsock_virtio_transport), virtiofs and ext4 built in, or put its modules in " +
	"LIBBOX_KERNEL_MODULES=/path/to/lib/modules/VERSION; see libbox/vz/README.md"

// kernelFrom checks the guest kernel the caller names (LIBBOX_KERNEL, and
// its modules, which may be ""): it is required, macOS has no kernel of its
// own to boot.
func kernelFrom(image, modules string) (vmboot.Kernel, error) {
	if image == "" {
		return vmboot.Kernel{}, errdefs.New(errdefs.FailedPrecondition, "no guest kernel for vm boxes: %s", kernelHint)
	}
	return vmboot.KernelAt(image, modules, kernelHint)
}

// checkSpec rejects what a vz box cannot do.
func checkSpec(spec backend.Spec) error {
	if spec.Detach {
		return errdefs.New(errdefs.Unsupported, "detach: a Virtualization.framework VM lives inside its host process and cannot outlive it; keep the host process running instead")
	}
	if spec.Network {
		return errdefs.New(errdefs.Unsupported, "network: not available in macOS vm boxes yet; create the box without network")
	}
	return nil
}

// cmdline is the kernel command line of a box: root on the first virtio-blk
// disk, the agent on vsock port AgentPort, the console on hvc0.
func cmdline(spec backend.Spec, debug bool) string {
	return vmboot.Cmdline{Console: "hvc0", Debug: debug, Box: &vmboot.Box{
		Transport: "virtio_pci", VsockPort: AgentPort, Hostname: spec.Hostname, Volumes: spec.Volumes, Network: spec.Network,
	}}.String()
}

// boxDisk gives the box its own raw copy of the base disk, made by clone
// (clonefile(2) on macOS: instant on APFS, blocks shared until written)
// and kept across stop/start. A crash mid-copy leaves only a .tmp file.
func boxDisk(dir, base string, clone func(src, dst string) error) (string, error) {
	disk := filepath.Join(dir, "disk.raw")
	if _, err := os.Stat(disk); err == nil {
		return disk, nil
	}
	tmp := disk + ".tmp"
	_ = os.Remove(tmp)
	if err := clone(base, tmp); err != nil {
		_ = os.Remove(tmp)
		return "", errdefs.Wrap(errdefs.Internal, err, "copy the base disk into %s (the libbox home must be on APFS for clonefile)", dir)
	}
	if err := os.Rename(tmp, disk); err != nil {
		_ = os.Remove(tmp)
		return "", errdefs.Wrap(errdefs.Internal, err, "box disk")
	}
	return disk, nil
}

// Backoff of connectRetry: the first retry after connectFirst, doubling up
// to connectMax.
const (
	connectFirst = 10 * time.Millisecond
	connectMax   = 500 * time.Millisecond
)

// connectRetry calls connect until it succeeds, the VM stops (done closes;
// stopped says why) or ctx ends. A vsock Connect fails at once while the
// guest does not listen yet, so retrying with backoff is the wait.
func connectRetry(ctx context.Context, done <-chan struct{}, connect func() (net.Conn, error), stopped func() error) (net.Conn, error) {
	delay := connectFirst
	t := time.NewTimer(0)
	defer t.Stop()
	<-t.C
	for {
		select {
		case <-done:
			return nil, stopped()
		default:
		}
		conn, err := connect()
		if err == nil {
			return conn, nil
		}
		t.Reset(delay)
		select {
		case <-done:
			return nil, stopped()
		case <-ctx.Done():
			return nil, errdefs.Wrap(errdefs.CodeOf(ctx.Err()), err, "vz: connect to the agent on vsock port %d (is the kernel's vsock driver built in or in LIBBOX_KERNEL_MODULES?)", AgentPort)
		case <-t.C:
		}
		delay = min(delay*2, connectMax)
	}
}

// stopStep is one escalation of stopSequence: do it, then wait up to wait.
type stopStep struct {
	name string
	do   func() error
	wait time.Duration
}

// Bounds of stopSequence's waits.
const (
	stopGrace    = 10 * time.Second // guest power-off after the agent's Shutdown, when ctx has no earlier deadline
	requestWait  = 3 * time.Second  // after RequestStop (ACPI-like power button)
	hardStopWait = 5 * time.Second  // after Stop
)

// stopSequence waits (bounded by ctx and grace) for done, then runs the
// steps in order until done closes. Steps run even when ctx has ended:
// a stop must not leave the VM running. It fails (Internal) when done is
// still open after the last step.
func stopSequence(ctx context.Context, done <-chan struct{}, grace time.Duration, steps []stopStep) error {
	if waitDone(ctx, done, grace) {
		return nil
	}
	var errs []error
	for _, s := range steps {
		if err := s.do(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
		}
		if waitDone(context.Background(), done, s.wait) {
			return nil
		}
	}
	return errdefs.Wrap(errdefs.Internal, errors.Join(errs...), "vz: the VM did not stop after %d escalations", len(steps))
}

// waitDone reports whether done closed within d and before ctx ended.
func waitDone(ctx context.Context, done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-ctx.Done():
	case <-t.C:
	}
	select {
	case <-done:
		return true
	default:
		return false
	}
}
