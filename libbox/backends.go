package libbox

import (
	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/sandbox"
)

// newBackend makes the backend of an isolation from the runtime's options
// (as Open filled them).
func newBackend(isolation string, o Options) (backend.Backend, error) {
	switch isolation {
	case IsolationSandbox:
		return sandbox.New(sandbox.Options{Home: o.Home, Logf: o.Logf})
	case IsolationVM:
		return newVMBackend(o)
	}
	return nil, errdefs.New(errdefs.InvalidArgument, "isolation %q: want \"vm\" or \"sandbox\"", isolation)
}
