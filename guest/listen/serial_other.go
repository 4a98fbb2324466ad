//go:build !linux

package listen

import (
	"errors"
	"net"
)

// Serial is only available on Linux guests.
func Serial(dev string) (net.Listener, error) {
	return nil, errors.New("serial listener: Linux only")
}
