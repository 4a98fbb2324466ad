//go:build darwin

package vz

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/Code-Hex/vz/v3"
	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/internal/vmboot"
)

// This file holds every call into Virtualization.framework; it is never
// compiled on Linux, only type-checked there (tools/darwincheck).

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
	return &Backend{opts: opts, cache: vmboot.CacheDir(opts.Home)}, nil
}

// Name is the isolation name.
func (b *Backend) Name() string { return "vm" }

// clonefile copies src to dst sharing blocks (APFS).
func clonefile(src, dst string) error { return unix.Clonefile(src, dst, 0) }

// Start boots a VM and returns once it runs; the runtime then waits for
// the agent with Ping.
func (b *Backend) Start(ctx context.Context, spec backend.Spec) (backend.Instance, error) {
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	k, err := kernelFrom(b.opts.Kernel, b.opts.KernelModules)
	if err != nil {
		return nil, err
	}
	initrd, err := vmboot.AgentInitramfs(b.cache, spec.AgentPath, k)
	if err != nil {
		return nil, err
	}
	base, err := vmboot.BaseDisk(ctx, b.cache, spec.ImageRoot, spec.ImageID)
	if err != nil {
		return nil, err
	}
	disk, err := boxDisk(spec.Dir, base, clonefile)
	if err != nil {
		return nil, err
	}
	cpus, mem := vmboot.Limits(spec.CPUs, spec.MemoryMiB)

	loader, err := vz.NewLinuxBootLoader(k.Image, vz.WithCommandLine(cmdline(spec, b.opts.VMDebug)), vz.WithInitrd(initrd))
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
		fs, err := vz.NewVirtioFileSystemDeviceConfiguration(vmboot.VolumeTag(i))
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
	i := &instance{spec: spec, opts: b.opts, vm: vm, files: files, done: make(chan struct{}), cpus: cpus, mem: mem}
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
	opts      Options
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

// Dial connects to the agent's vsock port, retrying with backoff while
// it does not listen yet, until ctx ends or the VM stops.
func (i *instance) Dial(ctx context.Context) (net.Conn, error) {
	devs := i.vm.SocketDevices()
	if len(devs) == 0 {
		return nil, errdefs.New(errdefs.Internal, "vz: the VM has no socket device")
	}
	connect := func() (net.Conn, error) { return devs[0].Connect(AgentPort) }
	stopped := func() error {
		return errdefs.New(errdefs.Unavailable, "vz: the VM of box %s stopped; its console says:\n%s", i.spec.ID, vmboot.ConsoleTail(i.spec.Dir, 20))
	}
	return connectRetry(ctx, i.done, connect, stopped)
}

func (i *instance) Done() <-chan struct{} { return i.done }

// Stop waits (bounded by ctx) for the guest to power off after the
// agent's Shutdown, then asks the framework to stop it (RequestStop), then
// stops it hard (Stop); each step bounded.
func (i *instance) Stop(ctx context.Context) error {
	err := stopSequence(ctx, i.done, stopGrace, []stopStep{
		{name: "RequestStop", wait: requestWait, do: func() error {
			if !i.vm.CanRequestStop() {
				return nil
			}
			_, err := i.vm.RequestStop()
			return err
		}},
		{name: "Stop", wait: hardStopWait, do: i.Kill},
	})
	if err != nil {
		return err
	}
	i.wg.Wait()
	return nil
}

// Kill stops the VM at once.
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

// Release cannot leave the VM running (it lives in this process): it
// stops it, bounded, and closes Done either way.
func (i *instance) Release() {
	_ = i.Kill()
	if waitDone(context.Background(), i.done, hardStopWait) {
		i.wg.Wait()
		return
	}
	if i.opts.Logf != nil {
		i.opts.Logf("vz: the VM of box %s did not stop in %s; releasing it anyway", i.spec.ID, hardStopWait)
	}
	i.finish()
}

func (i *instance) State() json.RawMessage {
	st, _ := backend.ProcStartTime(os.Getpid())
	b, _ := json.Marshal(backend.ProcState{Pid: os.Getpid(), StartTime: st})
	return b
}

func (i *instance) Info() map[string]any {
	return map[string]any{"accel": "vz", "machine": "Virtualization.framework", "cpus": i.cpus, "memory_mib": i.mem, "pid": os.Getpid()}
}
