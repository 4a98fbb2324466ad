//go:build !unix

package image

import "errors"

var errLocked = errors.New("lock held")

// lockFile is a no-op where flock does not exist: one process per store.
func lockFile(path string, exclusive, wait bool) (unlock func(), err error) {
	return func() {}, nil
}
