package libbox

import (
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/vz"
)

func newVMBackend(o Options) (backend.Backend, error) {
	return vz.New(vz.Options{Home: o.Home, Logf: o.Logf, Kernel: o.Kernel, KernelModules: o.KernelModules, VMDebug: o.VMDebug})
}
