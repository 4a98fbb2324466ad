package libbox

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/image"
)

func TestParseBootTimeout(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"90": 90 * time.Second, "1.5": 1500 * time.Millisecond, " 3 ": 3 * time.Second,
		"2m": 2 * time.Minute, "90s": 90 * time.Second, "1m30s": 90 * time.Second,
	} {
		if got, err := ParseBootTimeout(in); err != nil || got != want {
			t.Errorf("ParseBootTimeout(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "soon", "0", "-1", "-2m", "0s", "NaN", "1e300", "90 s"} {
		if d, err := ParseBootTimeout(bad); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "Go duration") {
			t.Errorf("ParseBootTimeout(%q) = %v, %v; want InvalidArgument saying what to write", bad, d, err)
		}
	}
}

// fakeEnv is an environment for withEnv.
func fakeEnv(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestOptionsFromEnv(t *testing.T) {
	home := t.TempDir()
	env := fakeEnv("LIBBOX_HOME", home, "LIBBOX_BOOT_TIMEOUT", "1.5", "LIBBOX_ACCEL", "tcg",
		"LIBBOX_KERNEL", "/k/vmlinuz", "LIBBOX_KERNEL_MODULES", "/k/mods", "LIBBOX_AGENT", "/a/box-agent",
		"LIBBOX_VM_DEBUG", "1", "LIBBOX_REGISTRY_AUTH", "ghcr.io=bob:pw", "LIBBOX_INSECURE_REGISTRIES", "r.local:5000,r2",
		"LIBBOX_REGISTRY_MIRRORS", "docker.io=m1:5000,docker.io=m2")
	o, err := Options{}.withEnv(env)
	if err != nil {
		t.Fatal(err)
	}
	if o.Home != home || o.BootTimeout != 1500*time.Millisecond || o.Accel != "tcg" || o.Kernel != "/k/vmlinuz" ||
		o.KernelModules != "/k/mods" || o.Agent != "/a/box-agent" || !o.VMDebug {
		t.Errorf("from the environment: %+v", o)
	}
	if o.Registries.Auth["ghcr.io"] != (image.Credential{Username: "bob", Password: "pw"}) ||
		!slices.Equal(o.Registries.Insecure, []string{"r.local:5000", "r2"}) ||
		!slices.Equal(o.Registries.Mirrors["docker.io"], []string{"m1:5000", "m2"}) {
		t.Errorf("registries from the environment: %+v", o.Registries)
	}

	// Fields the caller set win; an empty, non-nil registry part ignores
	// its variable; a relative home becomes absolute.
	set := Options{Home: "rel", BootTimeout: time.Minute, Accel: "kvm", Kernel: "/mine", Agent: "/my-agent",
		Registries: image.Registries{Insecure: []string{}}}
	o, err = set.withEnv(env)
	if err != nil {
		t.Fatal(err)
	}
	if abs, _ := filepath.Abs("rel"); o.Home != abs || o.BootTimeout != time.Minute || o.Accel != "kvm" || o.Kernel != "/mine" ||
		o.KernelModules != "/k/mods" || o.Agent != "/my-agent" || len(o.Registries.Insecure) != 0 || o.Registries.Auth == nil {
		t.Errorf("set fields: %+v", o)
	}

	// Nothing set: the default home, no timeout (each isolation's default).
	o, err = Options{}.withEnv(fakeEnv("HOME", home))
	if err != nil || !filepath.IsAbs(o.Home) || o.BootTimeout != 0 || o.Accel != "" || o.VMDebug {
		t.Errorf("empty environment: %+v, %v", o, err)
	}
	rt := &Runtime{opts: o}
	if rt.bootTimeout(IsolationVM) != 120*time.Second || rt.bootTimeout(IsolationSandbox) != 30*time.Second {
		t.Errorf("default boot timeouts: vm %s, sandbox %s", rt.bootTimeout(IsolationVM), rt.bootTimeout(IsolationSandbox))
	}
	rt.opts.BootTimeout = 5 * time.Second
	if rt.bootTimeout(IsolationVM) != 5*time.Second || rt.bootTimeout(IsolationSandbox) != 5*time.Second {
		t.Errorf("set boot timeout not used")
	}
}

// TestOptionsFromEnvErrors: each bad setting is refused by Open with
// InvalidArgument naming where it came from.
func TestOptionsFromEnvErrors(t *testing.T) {
	home := t.TempDir()
	for _, tc := range []struct {
		name   string
		opts   Options
		env    []string
		errHas string
	}{
		{"bad boot timeout", Options{}, []string{"LIBBOX_BOOT_TIMEOUT", "soon"}, "LIBBOX_BOOT_TIMEOUT"},
		{"negative boot timeout", Options{BootTimeout: -time.Second}, nil, "positive"},
		{"bad auth", Options{}, []string{"LIBBOX_REGISTRY_AUTH", "ghcr.io=nopassword"}, "LIBBOX_REGISTRY_AUTH"},
		{"bad mirrors", Options{}, []string{"LIBBOX_REGISTRY_MIRRORS", "docker.io"}, "LIBBOX_REGISTRY_MIRRORS"},
		{"bad templates switch", Options{}, []string{"LIBBOX_VM_TEMPLATES", "no"}, "LIBBOX_VM_TEMPLATES"},
	} {
		_, err := tc.opts.withEnv(fakeEnv(append([]string{"LIBBOX_HOME", home}, tc.env...)...))
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("%s: %v, want InvalidArgument containing %q", tc.name, err, tc.errHas)
		}
	}
	// Registries given as values are checked by Open too.
	bad := Options{Home: home, Registries: image.Registries{Mirrors: map[string][]string{"docker.io": {"a/b"}}}}
	if rt, err := Open(bad); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "mirror") {
		t.Errorf("mirror with a path: %v", err)
		if rt != nil {
			rt.Close()
		}
	}
}

// TestVMTemplateSwitches: a VM box asks its backend for a template unless
// LIBBOX_VM_TEMPLATES=0 (or Options.NoVMTemplates) or its ColdBoot says
// otherwise; a sandbox never does.
func TestVMTemplateSwitches(t *testing.T) {
	home := t.TempDir()
	for _, tc := range []struct {
		env       string
		opts      Options
		isolation string
		cold      bool
		want      bool
	}{
		{"", Options{}, IsolationVM, false, true},
		{"1", Options{}, IsolationVM, false, true},
		{"0", Options{}, IsolationVM, false, false},
		{"", Options{NoVMTemplates: true}, IsolationVM, false, false},
		{"", Options{}, IsolationVM, true, false},
		{"", Options{}, IsolationSandbox, false, false},
	} {
		o, err := tc.opts.withEnv(fakeEnv("LIBBOX_HOME", home, "LIBBOX_VM_TEMPLATES", tc.env))
		if err != nil {
			t.Fatal(err)
		}
		r := &Runtime{opts: o, home: home}
		b := newBox(r, boxConfig{ID: "0123456789abcdef", Isolation: tc.isolation, ColdBoot: tc.cold}, boxState{})
		if got := b.spec("/agent", &image.Image{Root: "/root"}).FromTemplate; got != tc.want {
			t.Errorf("env %q, %+v, %s, cold %v: FromTemplate %v, want %v", tc.env, tc.opts, tc.isolation, tc.cold, got, tc.want)
		}
	}
}
