//go:build !linux

package boot

import "errors"

// VM is only available on Linux guests.
func VM() (VMConfig, error) { return VMConfig{}, errors.New("boot: the VM guest runs on Linux only") }
