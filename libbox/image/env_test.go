package image

import "os"

// The tests configure registries as users do, through the LIBBOX_*
// variables; libbox.Open reads them in the library, these helpers here.

// registriesFromEnv parses the LIBBOX_* registry variables.
func registriesFromEnv() (Registries, error) {
	return ParseRegistries(os.Getenv("LIBBOX_REGISTRY_AUTH"), os.Getenv("LIBBOX_INSECURE_REGISTRIES"), os.Getenv("LIBBOX_REGISTRY_MIRRORS"))
}

// openEnv opens the store in dir with the registries of the environment.
func openEnv(dir string) (*Store, error) {
	reg, err := registriesFromEnv()
	if err != nil {
		return nil, err
	}
	return Open(dir, reg)
}

// registryConfigFromEnv is the canonical form of the environment's registries.
func registryConfigFromEnv() (registryConfig, error) {
	reg, err := registriesFromEnv()
	if err != nil {
		return registryConfig{}, err
	}
	return newRegistryConfig(reg)
}
