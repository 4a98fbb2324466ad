package libbox

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/image"
)

// The environment is read in this file only, once per Open: a library
// loaded by Python or Node sees the environment as it was when it was
// loaded, so everything below Open receives values instead.

// WithEnv returns o with every field left zero filled from its LIBBOX_*
// variable (see Options), and the home resolved to an absolute path. Open
// calls it; programs that configure a backend directly use it to read the
// environment the same way.
func (o Options) WithEnv() (Options, error) {
	return o.withEnv(os.Getenv)
}

func (o Options) withEnv(getenv func(string) string) (Options, error) {
	str := func(field *string, name string) {
		if *field == "" {
			*field = getenv(name)
		}
	}
	str(&o.Home, "LIBBOX_HOME")
	str(&o.Accel, "LIBBOX_ACCEL")
	str(&o.Kernel, "LIBBOX_KERNEL")
	str(&o.KernelModules, "LIBBOX_KERNEL_MODULES")
	str(&o.Agent, "LIBBOX_AGENT")
	if o.Home == "" {
		dir, err := os.UserHomeDir()
		if err != nil {
			return o, errdefs.Wrap(errdefs.InvalidArgument, err, "no home directory: set LIBBOX_HOME")
		}
		o.Home = filepath.Join(dir, ".local", "share", "libbox")
	}
	home, err := filepath.Abs(o.Home)
	if err != nil {
		return o, errdefs.Wrap(errdefs.InvalidArgument, err, "home %q", o.Home)
	}
	o.Home = home
	if !o.VMDebug {
		o.VMDebug = getenv("LIBBOX_VM_DEBUG") == "1"
	}
	if !o.NoVMTemplates {
		switch v := getenv("LIBBOX_VM_TEMPLATES"); v {
		case "", "1":
		case "0":
			o.NoVMTemplates = true
		default:
			return o, errdefs.New(errdefs.InvalidArgument, "LIBBOX_VM_TEMPLATES=%q: want 1 (VM boxes restore templates, the default) or 0 (they always boot)", v)
		}
	}
	if o.BootTimeout == 0 {
		if v := getenv("LIBBOX_BOOT_TIMEOUT"); v != "" {
			d, err := ParseBootTimeout(v)
			if err != nil {
				return o, errdefs.Wrap(errdefs.InvalidArgument, err, "LIBBOX_BOOT_TIMEOUT")
			}
			o.BootTimeout = d
		}
	}
	reg := &o.Registries
	if reg.Auth == nil || reg.Insecure == nil || reg.Mirrors == nil {
		env, err := image.ParseRegistries(getenv("LIBBOX_REGISTRY_AUTH"), getenv("LIBBOX_INSECURE_REGISTRIES"), getenv("LIBBOX_REGISTRY_MIRRORS"))
		if err != nil {
			return o, err
		}
		if reg.Auth == nil {
			reg.Auth = env.Auth
		}
		if reg.Insecure == nil {
			reg.Insecure = env.Insecure
		}
		if reg.Mirrors == nil {
			reg.Mirrors = env.Mirrors
		}
	}
	if o.BootTimeout < 0 {
		return o, errdefs.New(errdefs.InvalidArgument, "boot timeout %s: want a positive duration, or 0 for the default", o.BootTimeout)
	}
	return o, nil
}

// ParseBootTimeout reads a boot timeout as LIBBOX_BOOT_TIMEOUT and the C
// ABI's "boot_timeout" write it: a number of seconds ("90", "1.5") or a Go
// duration ("2m", "90s"). It must be positive.
func ParseBootTimeout(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	d, err := time.ParseDuration(s)
	if err != nil {
		d = -1
		if f, err := strconv.ParseFloat(s, 64); err == nil && f < float64(1<<62)/float64(time.Second) {
			d = time.Duration(f * float64(time.Second)) // NaN: < is false
		}
	}
	if d <= 0 {
		return 0, errdefs.New(errdefs.InvalidArgument, "boot timeout %q: want a positive number of seconds (90, 1.5) or a Go duration (2m, 90s)", s)
	}
	return d, nil
}

// bootTimeout is how long a starting box of that isolation may take to
// answer: Options.BootTimeout, else 120 s for VMs (generous enough for TCG
// on a loaded machine) and 30 s for sandboxes.
func (r *Runtime) bootTimeout(isolation string) time.Duration {
	if r.opts.BootTimeout > 0 {
		return r.opts.BootTimeout
	}
	if isolation == IsolationVM {
		return 120 * time.Second
	}
	return 30 * time.Second
}
