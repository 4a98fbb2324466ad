package libbox

import (
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/errdefs"
)

func newVMBackend(home string, logf func(string, ...any)) (backend.Backend, error) {
	return nil, errdefs.New(errdefs.Unsupported, "isolation \"vm\" is not available in this build yet: use isolation \"sandbox\"")
}
