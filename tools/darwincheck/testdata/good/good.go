//go:build darwin

package good

import "github.com/Code-Hex/vz/v3"

func Boot(kernel, initrd string) (*vz.VirtualMachine, error) {
	loader, err := vz.NewLinuxBootLoader(kernel, vz.WithCommandLine("console=hvc0"), vz.WithInitrd(initrd))
	if err != nil {
		return nil, err
	}
	cfg, err := vz.NewVirtualMachineConfiguration(loader, 2, 512<<20)
	if err != nil {
		return nil, err
	}
	return vz.NewVirtualMachine(cfg)
}
