//go:build darwin

// Package vz is the macOS micro-VM backend: each box is a
// Virtualization.framework VM (github.com/Code-Hex/vz/v3) booting the same
// kernel + libbox initramfs + ext4 root disk as the QEMU backend, with the
// agent listening on a vsock port.
//
// It is kept thin: everything that is not a vz call (kernel lookup,
// initramfs, base disk, console tail, boot deadline) comes from
// libbox/qemu, which is built and tested on Linux. It never speaks the agent
// protocol and never touches the box store. A vz VM lives inside the host
// process, so boxes cannot be detached.
package vz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/Code-Hex/vz/v3"
	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/guest/boot"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/qemu"
)

// AgentPort is the vsock port the agent listens on in the guest.
const AgentPort = 1024

// Defaults for a box that asks for nothing.
const (
	DefaultCPUs      = 1
	DefaultMemoryMiB = 512
)

// Options configure the backend.
type Options struct {
	Home string
	Logf func(string, ...any)
}

// Backend starts boxes as Virtualization.framework VMs.
type Backend struct {
	opts  Options
	cache string
}

var _ backend.Backend = (*Backend)(nil)

// New returns the backend; it checks nothing until Start.
func New(opts Options) (backend.Backend, error) {
	if opts.Home == "" {
		return nil, errdefs.New(errdefs.InvalidArgument, "vz backend: Options.Home is empty")
	}
	return &Backend{opts: opts, cache: qemu.CacheDir(opts.Home)}, nil
}

// Name is the isolation name.
func (b *Backend) Name() string { return "vm" }

const kernelHint = "set LIBBOX_KERNEL to an arm64 Linux kernel Image (uncompressed) with virtio, virtio_blk, " +
	"virtio_console, vsock (vmw_vsock_virtio_transport) and ext4 built in; see libbox/vz/README.md"

// kernel finds the guest kernel: LIBBOX_KERNEL is required on macOS.
func kernel() (qemu.Kernel, error) {
	p := os.Getenv("LIBBOX_KERNEL")
	if p == "" {
		return qemu.Kernel{}, errdefs.New(errdefs.Unavailable, "no guest kernel: %s", kernelHint)
	}
	if _, err := os.Stat(p); err != nil {
		return qemu.Kernel{}, errdefs.New(errdefs.NotFound, "LIBBOX_KERNEL=%s: %v; %s", p, err, kernelHint)
	}
	return qemu.Kernel{Image: p, Modules: os.Getenv("LIBBOX_KERNEL_MODULES")}, nil
}

// boxDisk gives the box its own copy of the base disk: a clonefile(2) copy
// on APFS (instant, shares blocks until written), kept across stop/start.
func boxDisk(dir, base string) (string, error) {
	disk := filepath.Join(dir, "disk.raw")
	if _, err := os.Stat(disk); err == nil {
		return disk, nil
	}
	tmp := disk + ".tmp"
	_ = os.Remove(tmp)
	if err := unix.Clonefile(base, tmp, 0); err != nil {
		return "", errdefs.Wrap(errdefs.Internal, err, "clone base disk (the libbox home must be on APFS)")
	}
	if err := os.Rename(tmp, disk); err != nil {
		return "", errdefs.Wrap(errdefs.Internal, err, "box disk")
	}
	return disk, nil
}

// Start boots a VM and returns once it runs; the runtime then waits for
// the agent with Ping.
func (b *Backend) Start(ctx context.Context, spec backend.Spec) (backend.Instance, error) {
	if spec.Detach {
		return nil, errdefs.New(errdefs.Unsupported, "detach: a Virtualization.framework VM lives inside its host process and cannot outlive it")
	}
	if spec.Network {
		return nil, errdefs.New(errdefs.Unsupported, "network: not available in vz boxes yet")
	}
	k, err := kernel()
	if err != nil {
		return nil, err
	}
	initrd, err := qemu.AgentInitramfs(b.cache, spec.AgentPath, k)
	if err != nil {
		return nil, err
	}
	base, err := qemu.BaseDisk(ctx, b.cache, spec.ImageRoot, spec.ImageID)
	if err != nil {
		return nil, err
	}
	disk, err := boxDisk(spec.Dir, base)
	if err != nil {
		return nil, err
	}
	cpus, mem := spec.CPUs, spec.MemoryMiB
	if cpus <= 0 {
		cpus = DefaultCPUs
	}
	if mem <= 0 {
		mem = DefaultMemoryMiB
	}
	cmdline := fmt.Sprintf("console=hvc0 quiet %s=/dev/vda %s=%d", boot.ParamRoot, boot.ParamVsock, AgentPort)
	if spec.Hostname != "" {
		cmdline += " " + boot.ParamHostname + "=" + spec.Hostname
	}
	var vols []boot.Volume
	for i, v := range spec.Volumes {
		vols = append(vols, boot.Volume{Tag: "vol" + strconv.Itoa(i), BoxPath: v.BoxPath, ReadOnly: v.ReadOnly})
	}
	if len(vols) > 0 {
		cmdline += " " + boot.ParamVolumes + "=" + boot.FormatVolumes(vols)
	}

	loader, err := vz.NewLinuxBootLoader(k.Image, vz.WithCommandLine(cmdline), vz.WithInitrd(initrd))
	if err != nil {
		return nil, vzError("boot loader", err)
	}
	cfg, err := vz.NewVirtualMachineConfiguration(loader, uint(cpus), uint64(mem)<<20)
	if err != nil {
		return nil, vzError("configuration", err)
	}
	console, err := os.OpenFile(filepath.Join(spec.Dir, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "console log")
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		console.Close()
		return nil, errdefs.Wrap(errdefs.Internal, err, "open /dev/null")
	}
	files := []*os.File{console, devnull}
	fail := func(what string, err error) (backend.Instance, error) {
		for _, f := range files {
			f.Close()
		}
		return nil, vzError(what, err)
	}
	serial, err := vz.NewFileHandleSerialPortAttachment(devnull, console)
	if err != nil {
		return fail("console", err)
	}
	port, err := vz.NewVirtioConsoleDeviceSerialPortConfiguration(serial)
	if err != nil {
		return fail("console", err)
	}
	cfg.SetSerialPortsVirtualMachineConfiguration([]*vz.VirtioConsoleDeviceSerialPortConfiguration{port})
	att, err := vz.NewDiskImageStorageDeviceAttachment(disk, false)
	if err != nil {
		return fail("disk", err)
	}
	blk, err := vz.NewVirtioBlockDeviceConfiguration(att)
	if err != nil {
		return fail("disk", err)
	}
	cfg.SetStorageDevicesVirtualMachineConfiguration([]vz.StorageDeviceConfiguration{blk})
	sock, err := vz.NewVirtioSocketDeviceConfiguration()
	if err != nil {
		return fail("vsock", err)
	}
	cfg.SetSocketDevicesVirtualMachineConfiguration([]vz.SocketDeviceConfiguration{sock})
	entropy, err := vz.NewVirtioEntropyDeviceConfiguration()
	if err != nil {
		return fail("entropy", err)
	}
	cfg.SetEntropyDevicesVirtualMachineConfiguration([]*vz.VirtioEntropyDeviceConfiguration{entropy})
	var shares []vz.DirectorySharingDeviceConfiguration
	for i, v := range spec.Volumes {
		dir, err := vz.NewSharedDirectory(v.HostPath, v.ReadOnly)
		if err != nil {
			return fail("volume "+v.HostPath, err)
		}
		share, err := vz.NewSingleDirectoryShare(dir)
		if err != nil {
			return fail("volume "+v.HostPath, err)
		}
		fs, err := vz.NewVirtioFileSystemDeviceConfiguration(vols[i].Tag)
		if err != nil {
			return fail("volume "+v.HostPath, err)
		}
		fs.SetDirectoryShare(share)
		shares = append(shares, fs)
	}
	if len(shares) > 0 {
		cfg.SetDirectorySharingDevicesVirtualMachineConfiguration(shares)
	}
	if ok, err := cfg.Validate(); !ok || err != nil {
		return fail("validate configuration", err)
	}
	vm, err := vz.NewVirtualMachine(cfg)
	if err != nil {
		return fail("create", err)
	}
	if err := vm.Start(); err != nil {
		return fail("start (does this binary have the com.apple.security.virtualization entitlement?)", err)
	}
	i := &instance{spec: spec, vm: vm, files: files, done: make(chan struct{}), cpus: cpus, mem: mem}
	i.watch()
	return i, nil
}

func vzError(what string, err error) error {
	if err == nil {
		err = errors.New("unknown error")
	}
	return errdefs.Wrap(errdefs.Unavailable, err, "vz: %s", what)
}

// Attach: a vz VM never outlives the process that started it.
func (b *Backend) Attach(ctx context.Context, spec backend.Spec, state json.RawMessage) (backend.Instance, error) {
	return nil, errdefs.New(errdefs.NotFound, "box %s: vz VMs end with their host process", spec.ID)
}

type instance struct {
	spec      backend.Spec
	vm        *vz.VirtualMachine
	files     []*os.File
	cpus, mem int

	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// watch follows the VM's state until it stops or fails.
func (i *instance) watch() {
	i.wg.Add(1)
	go func() {
		defer i.wg.Done()
		for st := range i.vm.StateChangedNotify() {
			if st == vz.VirtualMachineStateStopped || st == vz.VirtualMachineStateError {
				i.finish()
				return
			}
		}
		i.finish()
	}()
}

func (i *instance) finish() {
	i.closeOnce.Do(func() {
		for _, f := range i.files {
			f.Close()
		}
		close(i.done)
	})
}

// Dial connects to the agent's vsock port, retrying while it does not
// listen yet (Connect fails at once then), until ctx ends.
func (i *instance) Dial(ctx context.Context) (net.Conn, error) {
	devs := i.vm.SocketDevices()
	if len(devs) == 0 {
		return nil, errdefs.New(errdefs.Internal, "vz: the VM has no socket device")
	}
	delay := 10 * time.Millisecond
	for {
		conn, err := devs[0].Connect(AgentPort)
		if err == nil {
			return conn, nil
		}
		select {
		case <-i.done:
			return nil, errdefs.New(errdefs.Unavailable, "vz: the VM stopped: %s", qemu.ConsoleTail(i.spec.Dir, 10))
		case <-ctx.Done():
			return nil, errdefs.Wrap(errdefs.CodeOf(ctx.Err()), err, "vz: connect to the agent on vsock port %d", AgentPort)
		case <-time.After(delay):
		}
		if delay < 500*time.Millisecond {
			delay *= 2
		}
	}
}

func (i *instance) Done() <-chan struct{} { return i.done }

// Stop waits for the guest to power off, then asks the framework to stop
// it, then stops it hard; each step bounded.
func (i *instance) Stop(ctx context.Context) error {
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-i.done:
			return true
		case <-ctx.Done():
			return false
		case <-t.C:
			return false
		}
	}
	if !wait(10 * time.Second) {
		if i.vm.CanRequestStop() {
			_, _ = i.vm.RequestStop()
		}
		if !wait(3 * time.Second) {
			_ = i.Kill()
			if !wait(5 * time.Second) {
				return errdefs.New(errdefs.Internal, "vz: VM %s did not stop", i.spec.ID)
			}
		}
	}
	i.wg.Wait()
	return nil
}

func (i *instance) Kill() error {
	select {
	case <-i.done:
		return nil
	default:
	}
	if i.vm.CanStop() {
		return i.vm.Stop()
	}
	return nil
}

// Release cannot leave the VM running: it lives in this process.
func (i *instance) Release() {
	_ = i.Kill()
	<-i.done
	i.wg.Wait()
}

func (i *instance) State() json.RawMessage {
	st, _ := backend.ProcStartTime(os.Getpid())
	b, _ := json.Marshal(backend.ProcState{Pid: os.Getpid(), StartTime: st})
	return b
}

func (i *instance) Info() map[string]any {
	return map[string]any{"accel": "vz", "machine": "Virtualization.framework", "cpus": i.cpus, "memory_mib": i.mem, "pid": os.Getpid()}
}
