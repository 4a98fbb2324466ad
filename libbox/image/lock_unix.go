//go:build unix

package image

import (
	"errors"
	"os"
	"syscall"
)

// errLocked is returned by lockFile when wait is false and the lock is held.
var errLocked = errors.New("lock held")

// lockFile takes an flock on path (shared or exclusive). With wait false it
// fails with errLocked instead of blocking. Locks conflict between processes
// and between separate calls in one process alike.
func lockFile(path string, exclusive, wait bool) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	if !wait {
		how |= syscall.LOCK_NB
	}
	for {
		err = syscall.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		if err == syscall.EWOULDBLOCK {
			return nil, errLocked
		}
		return nil, err
	}
	return func() { f.Close() }, nil
}
