package libbox

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
)

// attachTimeout bounds reaching the agent of a box another process
// started: a running agent answers at once.
const attachTimeout = 10 * time.Second

// lockStart takes the box's start lock, an flock on <box dir>/start.lock
// shared by every process using the home: a box's start (the decision to
// launch or attach, the launch, the state written) runs under it, so two
// processes starting one box at once never launch two instances on one
// disk: the second waits, reads the state the first wrote and attaches.
// Waiting gives up when ctx ends.
func (b *Box) lockStart(ctx context.Context) (func(), error) {
	f, err := os.OpenFile(filepath.Join(b.dir, "start.lock"), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, errdefs.New(errdefs.NotFound, "box %s was removed", b.cfg.ID)
		}
		return nil, errdefs.Wrap(errdefs.FailedPrecondition, err, "box %s: start lock", b.cfg.ID)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() {
				_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
				f.Close()
			}, nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			f.Close()
			return nil, errdefs.Wrap(errdefs.Internal, err, "box %s: start lock", b.cfg.ID)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, errdefs.Wrap(errdefs.DeadlineExceeded, ctx.Err(), "box %s: waiting for another process starting it", b.cfg.ID)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// reloadStateLocked reads the state another process may have written
// since this Box was opened (b.mu held, no instance in this process).
func (b *Box) reloadStateLocked() {
	var st boxState
	if err := readJSON(filepath.Join(b.dir, "state.json"), &st); err == nil {
		b.st = st
	}
}
