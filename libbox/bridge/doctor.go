package bridge

import (
	"context"
	"encoding/json"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox"
)

// doctorTimeout bounds the host checks (a QEMU --version, a user namespace).
const doctorTimeout = 30 * time.Second

// Doctor checks the host (libbox.Doctor) with the runtime options JSON and
// returns the report as JSON.
func Doctor(optsJSON string) (string, error) {
	opts, err := parseRuntimeOptions(optsJSON)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), doctorTimeout)
	defer cancel()
	b, err := json.Marshal(libbox.Doctor(ctx, opts))
	if err != nil {
		return "", errdefs.Wrap(errdefs.Internal, err, "doctor report")
	}
	return string(b), nil
}
