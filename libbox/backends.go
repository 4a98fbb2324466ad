package libbox

import (
	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/sandbox"
)

func newBackend(isolation, home string, logf func(string, ...any)) (backend.Backend, error) {
	switch isolation {
	case IsolationSandbox:
		return sandbox.New(sandbox.Options{Home: home, Logf: logf})
	case IsolationVM:
		return newVMBackend(home, logf)
	}
	return nil, errdefs.New(errdefs.InvalidArgument, "isolation %q: want \"vm\" or \"sandbox\"", isolation)
}
