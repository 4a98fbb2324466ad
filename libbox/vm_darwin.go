package libbox

import (
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/vz"
)

func newVMBackend(home string, logf func(string, ...any)) (backend.Backend, error) {
	return vz.New(vz.Options{Home: home, Logf: logf})
}
