package libbox

import (
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/qemu"
)

func newVMBackend(o Options) (backend.Backend, error) {
	return qemu.New(qemu.Options{Home: o.Home, Logf: o.Logf, BootTimeout: o.BootTimeout, Accel: o.Accel,
		Kernel: o.Kernel, KernelModules: o.KernelModules, VMDebug: o.VMDebug})
}
