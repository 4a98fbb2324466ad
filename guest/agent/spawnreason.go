package agent

import (
	"errors"

	"github.com/libbox/libbox/guest/agentpb"
)

// reasonError marks a spawn failure with its reason, sent to the host as
// Exit.spawn_reason so that it never has to read the message. The error
// class is the wrapped error's.
type reasonError struct {
	reason agentpb.Exit_SpawnReason
	err    error
}

func (e *reasonError) Error() string { return e.err.Error() }
func (e *reasonError) Unwrap() error { return e.err }

// withReason marks err (nil stays nil).
func withReason(r agentpb.Exit_SpawnReason, err error) error {
	if err == nil {
		return nil
	}
	return &reasonError{reason: r, err: err}
}

// reasonOf is the reason err was marked with, or SPAWN_REASON_UNSPECIFIED.
func reasonOf(err error) agentpb.Exit_SpawnReason {
	var r *reasonError
	if errors.As(err, &r) {
		return r.reason
	}
	return agentpb.Exit_SPAWN_REASON_UNSPECIFIED
}
