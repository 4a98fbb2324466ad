package bridge

import (
	"slices"
	"testing"
	"time"

	"github.com/libbox/libbox/libbox/image"
)

// TestRuntimeOptionsFields: every runtime option reaches libbox.Options
// (the environment fills the rest in libbox.Open).
func TestRuntimeOptionsFields(t *testing.T) {
	o, err := parseRuntimeOptions(`{"home": "/h", "boot_timeout": 1.5, "accel": "tcg", "kernel": "/k", "kernel_modules": "/m",
		"agent": "/a", "vm_debug": true, "registry_auth": "ghcr.io=u:p", "insecure_registries": "r:5000", "registry_mirrors": "docker.io=m"}`)
	if err != nil {
		t.Fatal(err)
	}
	if o.Home != "/h" || o.BootTimeout != 1500*time.Millisecond || o.Accel != "tcg" || o.Kernel != "/k" || o.KernelModules != "/m" ||
		o.Agent != "/a" || !o.VMDebug || o.Registries.Auth["ghcr.io"] != (image.Credential{Username: "u", Password: "p"}) ||
		!slices.Equal(o.Registries.Insecure, []string{"r:5000"}) || !slices.Equal(o.Registries.Mirrors["docker.io"], []string{"m"}) {
		t.Errorf("options: %+v", o)
	}
	for in, want := range map[string]time.Duration{`{"boot_timeout": "2m"}`: 2 * time.Minute, `{"boot_timeout": 90}`: 90 * time.Second, `{"boot_timeout": null}`: 0, `{}`: 0} {
		if o, err := parseRuntimeOptions(in); err != nil || o.BootTimeout != want {
			t.Errorf("%s: %v, %v; want %v", in, o.BootTimeout, err, want)
		}
	}
}
