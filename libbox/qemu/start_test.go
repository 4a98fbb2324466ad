//go:build linux

package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/bootparam"
	"github.com/libbox/libbox/internal/testutil"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/internal/vmboot"
)

// TestMachineCmdline: each machine gets its transport module and quirks
// on the command line the agent parses.
func TestMachineCmdline(t *testing.T) {
	for _, tc := range []struct {
		accel, transport string
		pcQuirks         bool
		r                rung
	}{{"pc-tcg", "virtio_pci", true, ladder[2]}, {"pc-kvm", "virtio_pci", true, ladder[1]}, {"microvm-kvm", "virtio_mmio", false, ladder[0]}} {
		line := tc.r.machine().cmdline(&vmboot.Box{Port: PortName, Hostname: "h1"}, false)
		p := bootparam.ParseCmdline(line)
		if !strings.HasPrefix(p[bootparam.ParamModules], tc.transport+",") || p[bootparam.ParamPort] != PortName || p[bootparam.ParamHostname] != "h1" {
			t.Errorf("%s: %q", tc.accel, line)
		}
		if strings.Contains(line, "acpi=noirq") != tc.pcQuirks || !strings.Contains(line, "console=ttyS0") {
			t.Errorf("%s: quirks in %q", tc.accel, line)
		}
	}
}

func TestStartBadSpec(t *testing.T) {
	dir := t.TempDir()
	img := t.TempDir()
	script := filepath.Join(t.TempDir(), "agent.sh")
	testutil.Must(t, os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755))
	long := filepath.Join(dir, strings.Repeat("d", 100))
	testutil.Must(t, os.MkdirAll(long, 0o755))
	good := backend.Spec{ID: "x", Dir: dir, ImageRoot: img, AgentPath: script}
	b, err := New(Options{Home: t.TempDir()})
	testutil.Must(t, err)
	for _, tc := range []struct {
		name   string
		edit   func(*backend.Spec)
		code   errdefs.Code
		errHas string
	}{
		{"relative dir", func(s *backend.Spec) { s.Dir = "box" }, errdefs.InvalidArgument, "must be an absolute directory"},
		{"no agent", func(s *backend.Spec) { s.AgentPath = "" }, errdefs.InvalidArgument, "Spec.AgentPath is empty"},
		{"no image", func(s *backend.Spec) { s.ImageRoot = "" }, errdefs.InvalidArgument, "Spec.ImageRoot is empty"},
		{"missing dir", func(s *backend.Spec) { s.Dir = filepath.Join(dir, "gone") }, errdefs.NotFound, "does not exist"},
		{"missing image", func(s *backend.Spec) { s.ImageRoot = filepath.Join(img, "gone") }, errdefs.NotFound, "is not a directory"},
		{"bad hostname", func(s *backend.Spec) { s.Hostname = "a b" }, errdefs.InvalidArgument, "hostname"},
		{"long dir", func(s *backend.Spec) { s.Dir = long }, errdefs.InvalidArgument, "too long for a unix socket path"},
	} {
		spec := good
		tc.edit(&spec)
		_, err := b.Start(context.Background(), spec)
		if errdefs.CodeOf(err) != tc.code || err == nil || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("%s: %v, want %v containing %q", tc.name, err, tc.code, tc.errHas)
		}
	}
	if _, err := vmboot.FindKernel(os.Getenv("LIBBOX_KERNEL"), os.Getenv("LIBBOX_KERNEL_MODULES")); err == nil {
		b.opts.Accel = AccelTCG
		if _, err := b.Start(context.Background(), good); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "not a static ELF") {
			t.Errorf("script as agent: %v", err)
		}
	}
	if _, err := New(Options{}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("New without Home: %v", err)
	}
}
