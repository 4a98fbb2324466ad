// Package bootparam is the boot contract between a host backend and the
// agent it starts: the kernel parameters a VM boots with, the volume
// encoding, and the spec a sandbox agent reads as PID 1. Both sides import
// it; it holds no behaviour beyond encoding and decoding.
//
// It must never import the host runtime or the agent's boot steps.
package bootparam

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
)

// Kernel command line parameters the host (libbox/qemu) passes to a VM.
const (
	ParamRoot     = "libbox.root"     // root disk device, e.g. /dev/vda (ext4)
	ParamPort     = "libbox.port"     // name of the agent's virtio-serial port
	ParamVsock    = "libbox.vsock"    // vsock port to listen on instead (when set)
	ParamHostname = "libbox.hostname" // hostname of the box
	ParamVolumes  = "libbox.volumes"  // TAG:BOXPATH[:ro],... (BOXPATH %-escaped)
	ParamDebug    = "libbox.debug"    // 1: log each boot step on the console
	ParamModules  = "libbox.modules"  // modules to load (with their deps); empty: all in ModuleList
)

// ModuleList is the initramfs file naming the kernel modules it carries,
// one "NAME PATH DEPS" line each, dependencies first (written by
// libbox/qemu).
const ModuleList = "/lib/modules/libbox.load"

// VMRoot is where the root disk is mounted; processes are spawned with
// Chroot into it.
const VMRoot = "/mnt/root"

// ParseCmdline returns the libbox.* parameters of a kernel command line.
func ParseCmdline(s string) map[string]string {
	out := map[string]string{}
	for _, w := range strings.Fields(s) {
		k, v, _ := strings.Cut(w, "=")
		if strings.HasPrefix(k, "libbox.") {
			out[k] = v
		}
	}
	return out
}

// Volume is a host directory shared into the VM under a virtiofs tag.
type Volume struct {
	Tag      string
	BoxPath  string
	ReadOnly bool
}

// FormatVolumes encodes volumes for the libbox.volumes parameter.
func FormatVolumes(vols []Volume) string {
	parts := make([]string, 0, len(vols))
	for _, v := range vols {
		s := v.Tag + ":" + escapeParam(v.BoxPath)
		if v.ReadOnly {
			s += ":ro"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ",")
}

// escapeParam %-escapes every byte of s outside [A-Za-z0-9/._-], so the
// value has no blank, comma or colon.
func escapeParam(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("/._-", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// ParseVolumes decodes the libbox.volumes parameter.
func ParseVolumes(s string) ([]Volume, error) {
	if s == "" {
		return nil, nil
	}
	var out []Volume
	for _, part := range strings.Split(s, ",") {
		f := strings.Split(part, ":")
		if len(f) < 2 || len(f) > 3 || f[0] == "" || (len(f) == 3 && f[2] != "ro" && f[2] != "rw") {
			return nil, fmt.Errorf("bootparam: bad volume %q in %s: want TAG:BOXPATH[:ro]", part, ParamVolumes)
		}
		p, err := url.PathUnescape(f[1])
		if err != nil || !filepath.IsAbs(p) {
			return nil, fmt.Errorf("bootparam: bad volume path %q in %s: want an absolute, %%-escaped path", f[1], ParamVolumes)
		}
		out = append(out, Volume{Tag: f[0], BoxPath: filepath.Clean(p), ReadOnly: len(f) == 3 && f[2] == "ro"})
	}
	return out, nil
}
