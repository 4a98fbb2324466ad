package vmboot

import (
	"strconv"
	"strings"

	"github.com/libbox/libbox/guest/bootparam"
	"github.com/libbox/libbox/libbox/backend"
)

// Cmdline describes a VM's kernel command line; String renders it. Every VM
// backend builds its command line here, so the guest agent reads the same
// contract (guest/bootparam) whatever the hypervisor.
type Cmdline struct {
	Console string   // kernel console device: "ttyS0" (a serial port), "hvc0" (virtio console)
	Debug   bool     // log the kernel and each of the agent's boot steps on the console
	Machine []string // parameters the machine needs (hypervisor quirks), in order
	Box     *Box     // the agent's parameters; nil for a boot without the agent (probes)
}

// Box is what the agent needs to find its root disk, its transport, its
// drivers, its hostname and its volumes.
type Box struct {
	// Transport is the kernel module of the machine's virtio transport
	// (virtio_pci, virtio_mmio).
	Transport string
	// Port names the agent's virtio-serial port; VsockPort, when not 0,
	// makes the agent listen on that vsock port instead.
	Port      string
	VsockPort int
	Hostname  string
	// Volumes are shared with virtiofs, the i-th under VolumeTag(i).
	Volumes []backend.Volume
	Network bool // the machine has a virtio-net device: load its driver
	// Net configures the box's interface (nil: the agent configures none).
	Net *bootparam.NetSpec
}

// Modules are the kernel modules the agent loads for the box (each with
// its dependencies, from the initramfs's guestModules).
func (b *Box) Modules() []string {
	mods := []string{b.Transport, "virtio_blk", "virtio_console"}
	if b.VsockPort != 0 {
		mods = append(mods, "vmw_vsock_virtio_transport")
	}
	if len(b.Volumes) > 0 {
		mods = append(mods, "virtiofs")
	}
	if b.Network {
		mods = append(mods, "virtio_net")
	}
	return mods
}

// BootVolumes are the box's volumes as the guest sees them.
func (b *Box) BootVolumes() []bootparam.Volume {
	vols := make([]bootparam.Volume, len(b.Volumes))
	for i, v := range b.Volumes {
		vols[i] = bootparam.Volume{Tag: VolumeTag(i), BoxPath: v.BoxPath, ReadOnly: v.ReadOnly}
	}
	return vols
}

// String renders the command line: the console, the kernel exits on panic
// (the hypervisor ends the VM instead of rebooting it), a quiet boot unless
// Debug, the machine's parameters, then the agent's.
func (c Cmdline) String() string {
	p := []string{"console=" + c.Console, "panic=-1"}
	if c.Debug {
		p = append(p, "loglevel=7", "GRPC_GO_LOG_SEVERITY_LEVEL=info", "GRPC_GO_LOG_VERBOSITY_LEVEL=2", bootparam.ParamDebug+"=1")
	} else {
		p = append(p, "quiet", "loglevel=4")
	}
	p = append(p, c.Machine...)
	if b := c.Box; b != nil {
		p = append(p, bootparam.ParamRoot+"=/dev/vda")
		if b.VsockPort != 0 {
			p = append(p, bootparam.ParamVsock+"="+strconv.Itoa(b.VsockPort))
		} else {
			p = append(p, bootparam.ParamPort+"="+b.Port)
		}
		p = append(p, bootparam.ParamModules+"="+strings.Join(b.Modules(), ","))
		if b.Net != nil {
			p = append(p, bootparam.ParamNet+"="+b.Net.Format())
		}
		if b.Hostname != "" {
			p = append(p, bootparam.ParamHostname+"="+b.Hostname)
		}
		if len(b.Volumes) > 0 {
			p = append(p, bootparam.ParamVolumes+"="+bootparam.FormatVolumes(b.BootVolumes()))
		}
	}
	return strings.Join(p, " ")
}
