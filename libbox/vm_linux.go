package libbox

import (
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/qemu"
)

func newVMBackend(home string, logf func(string, ...any)) (backend.Backend, error) {
	return qemu.New(qemu.Options{Home: home, Logf: logf})
}
