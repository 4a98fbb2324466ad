//go:build linux

package qemu

import (
	"context"
	"io"
	"net/netip"
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
		{"network without link", func(s *backend.Spec) { s.Network = true }, errdefs.InvalidArgument, "Spec.NetLink"},
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

// TestNetLink: a box with a network gets a virtio-net device on a stream
// netdev over QEMU's fd, the boot parameter its agent configures eth0
// from, and the host end of the same socket pair (stream framing).
func TestNetLink(t *testing.T) {
	for _, r := range []rung{ladder[0], ladder[2]} {
		m := r.machine()
		var host *os.File
		link := &backend.NetworkLink{Address: netip.MustParsePrefix("192.168.127.2/24"), Gateway: netip.MustParseAddr("192.168.127.1"),
			MAC: "5a:94:ef:e4:0c:ee", MTU: 1500, Attach: func(f *os.File, stream bool) error {
				if !stream {
					t.Error("attached as frame per read")
				}
				host = f
				return nil
			}}
		box := &vmboot.Box{Port: PortName}
		nl, args, err := newNetLink(backend.Spec{Network: true, NetLink: link}, m, box)
		testutil.Must(t, err)
		want := []string{"-netdev", "stream,id=net0,server=off,addr.type=fd,addr.str=3", "-device", m.device("virtio-net") + ",netdev=net0,mac=5a:94:ef:e4:0c:ee"}
		if strings.Join(args, " ") != strings.Join(want, " ") || len(nl.files()) != 1 {
			t.Errorf("%s: args %q, want %q", r.Name, args, want)
		}
		p := bootparam.ParseCmdline(m.cmdline(box, false))
		if p[bootparam.ParamNet] != "192.168.127.2/24,192.168.127.1,1500" || !strings.HasSuffix(p[bootparam.ParamModules], ",virtio_net") {
			t.Errorf("%s: boot parameters %v", r.Name, p)
		}
		if _, err := nl.files()[0].Write([]byte("frame")); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 5)
		if _, err := io.ReadFull(host, got); err != nil || string(got) != "frame" {
			t.Errorf("%s: host end read %q, %v", r.Name, got, err)
		}
		host.Close()
		nl.close()
	}
	nl, args, err := newNetLink(backend.Spec{}, ladder[2].machine(), &vmboot.Box{})
	if err != nil || nl != nil || strings.Join(args, " ") != "-nic none" {
		t.Errorf("no network: %v %q %v", nl, args, err)
	}
	nl.close() // a nil link holds nothing
	fail := &backend.NetworkLink{Attach: func(f *os.File, _ bool) error { f.Close(); return errdefs.New(errdefs.FailedPrecondition, "closed") }}
	if _, _, err := newNetLink(backend.Spec{Network: true, NetLink: fail}, ladder[2].machine(), &vmboot.Box{}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("attach error: %v", err)
	}
}
