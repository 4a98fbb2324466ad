//go:build !linux

package boot

import "errors"

// Sandbox is only available on Linux.
func Sandbox(string) (SandboxConfig, error) {
	return SandboxConfig{}, errors.New("boot: the namespace sandbox runs on Linux only")
}
