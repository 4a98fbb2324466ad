//go:build darwin

package bad

import "github.com/Code-Hex/vz/v3"

func Boot(kernel string) error {
	loader, err := vz.NewLinuxBootLoader(kernel)
	if err != nil {
		return err
	}
	// Wrong: the CPU count is a uint, and the result has two values.
	cfg := vz.NewVirtualMachineConfiguration(loader, "two", 512<<20)
	_ = cfg
	// Wrong: no such function.
	_, _ = vz.NewVirtualMachineWithWings(nil)
	return nil
}
