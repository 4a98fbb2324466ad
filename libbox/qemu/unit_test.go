package qemu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/bootparam"
	"github.com/libbox/libbox/libbox/backend"
)

type cpioEntry struct {
	name       string
	mode       uint32
	rmaj, rmin uint32
	data       string
}

// readCPIO parses a newc archive strictly (magic, alignment, trailer).
func readCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	field := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("bad header field %d at %d: %v", i, off, err)
		}
		return uint32(v)
	}
	for {
		if off%4 != 0 || off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad header at offset %d", off)
		}
		mode, size, rmaj, rmin, nsize := field(1), field(6), field(9), field(10), field(11)
		name := string(b[off+110 : off+110+int(nsize)-1])
		if b[off+110+int(nsize)-1] != 0 {
			t.Fatalf("name %q not NUL-terminated", name)
		}
		data := off + 110 + int(nsize)
		data = (data + 3) &^ 3
		if name == "TRAILER!!!" {
			if data != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-data)
			}
			return out
		}
		out = append(out, cpioEntry{name, mode, rmaj, rmin, string(b[data : data+int(size)])})
		off = (data + int(size) + 3) &^ 3
	}
}

func TestCPIOWriter(t *testing.T) {
	var buf bytes.Buffer
	c := newCPIO(&buf)
	c.Dir("dev", 0o755)
	c.CharDev("dev/console", 0o600, 5, 1)
	c.File("/init", 0o755, []byte("hello")) // leading slash dropped
	c.File("empty", 0o644, nil)
	c.Symlink("bin/sh", "busybox")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got := readCPIO(t, buf.Bytes())
	want := []cpioEntry{
		{"dev", cpioDir | 0o755, 0, 0, ""},
		{"dev/console", cpioChr | 0o600, 5, 1, ""},
		{"init", cpioReg | 0o755, 0, 0, "hello"},
		{"empty", cpioReg | 0o644, 0, 0, ""},
		{"bin/sh", cpioLink | 0o777, 0, 0, "busybox"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("entries:\n got %v\nwant %v", got, want)
	}
	if err := newCPIO(&buf).File("", 0o644, nil); err == nil {
		t.Fatal("empty name accepted")
	}
	// The host's cpio(1), when present, must agree.
	if cpio, err := exec.LookPath("cpio"); err == nil {
		cmd := exec.Command(cpio, "-it", "--quiet")
		cmd.Stdin = bytes.NewReader(buf.Bytes())
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("cpio -it: %v", err)
		}
		if got := strings.Fields(string(out)); !slices.Equal(got, []string{"dev", "dev/console", "init", "empty", "bin/sh"}) {
			t.Fatalf("cpio -it lists %v", got)
		}
	}
}

func TestResolveModulesOrder(t *testing.T) {
	deps := map[string][]string{
		"virtio_pci":            {"virtio", "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev"},
		"virtio_pci_modern_dev": nil,
		"virtio_pci_legacy_dev": nil,
		"virtio":                nil,
		"virtio_ring":           {"virtio"},
		"virtio_console":        {"virtio", "virtio_ring"},
		"virtio_blk":            {"virtio", "virtio_ring"},
		"cycle_a":               {"cycle_b"},
		"cycle_b":               {"cycle_a"},
		"needs_missing":         {"not_there"},
	}
	ix := &moduleIndex{dir: "/fake", files: map[string]string{}, builtin: map[string]bool{"ext4": true}}
	for n := range deps {
		ix.files[n] = "kernel/" + n + ".ko"
	}
	ix.loadFn = func(n string) (*module, error) { return &module{name: n, path: ix.files[n], deps: deps[n]}, nil }
	names := func(ms []*module) []string {
		var s []string
		for _, m := range ms {
			s = append(s, m.name)
		}
		return s
	}
	ms, err := resolveModules(ix, []string{"virtio_pci", "ext4", "virtio_mmio", "virtio_console", "virtio_blk"}, map[string]bool{"virtio_console": true})
	if err != nil {
		t.Fatal(err)
	}
	got := names(ms)
	want := []string{"virtio", "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_console", "virtio_blk"}
	if !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	for _, tc := range []struct {
		wanted   []string
		required map[string]bool
		errHas   string
	}{
		{[]string{"cycle_a"}, nil, "dependency cycle cycle_a -> cycle_b -> cycle_a"},
		{[]string{"needs_missing"}, nil, "not_there (needed by needs_missing <- box)"},
		{[]string{"absent"}, map[string]bool{"absent": true}, "kernel module absent (needed by box)"},
	} {
		_, err := resolveModules(ix, tc.wanted, tc.required)
		if err == nil || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("resolve %v: error %v, want one containing %q", tc.wanted, err, tc.errHas)
		}
	}
}

// TestRealModules orders the modules of the installed guest kernel from
// their .modinfo sections (no modules.dep).
func TestRealModules(t *testing.T) {
	k := requireKernel(t)
	if k.Modules == "" {
		t.Skip("the kernel has no modules dir")
	}
	ix, err := indexModules(k.Modules)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := resolveModules(ix, []string{"virtio_pci", "virtio_console", "virtio_blk"}, map[string]bool{"virtio_console": true, "virtio_blk": true})
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range ms {
		pos[m.name] = i
		if !bytes.HasPrefix(m.data, []byte("\x7fELF")) {
			t.Errorf("%s: not an ELF file after decompression", m.path)
		}
	}
	for _, m := range ms {
		for _, d := range m.deps {
			if p, ok := pos[d]; ok && p > pos[m.name] {
				t.Errorf("%s is loaded before its dependency %s", m.name, d)
			}
		}
	}
	if _, ok := pos["virtio_console"]; !ok {
		t.Errorf("virtio_console missing from %v", pos)
	}
}

func TestParseVolumesRoundTrip(t *testing.T) {
	vols := []bootparam.Volume{{Tag: "vol0", BoxPath: "/mnt/my src,x:y", ReadOnly: true}, {Tag: "vol1", BoxPath: "/data"}}
	s := bootparam.FormatVolumes(vols)
	if strings.ContainsAny(s, " \t") {
		t.Fatalf("volumes parameter %q has blanks", s)
	}
	got, err := bootparam.ParseVolumes(s)
	if err != nil || !slices.Equal(got, vols) {
		t.Fatalf("ParseVolumes(%q) = %v, %v", s, got, err)
	}
	for _, bad := range []string{"vol0", "vol0:rel/path", ":/x", "vol0:/x:rx"} {
		if _, err := bootparam.ParseVolumes(bad); err == nil {
			t.Errorf("ParseVolumes(%q) accepted", bad)
		}
	}
}

func TestConsoleTail(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	for i := range 100 {
		fmt.Fprintf(&b, "line %d\r\n", i)
	}
	os.WriteFile(filepath.Join(dir, "console.log"), []byte(b.String()), 0o644)
	if got := ConsoleTail(dir, 2); got != "line 98\nline 99" {
		t.Fatalf("tail = %q", got)
	}
	if got := ConsoleTail(t.TempDir(), 2); got != "" {
		t.Fatalf("tail of nothing = %q", got)
	}
}

func TestFindKernelEnv(t *testing.T) {
	t.Setenv("LIBBOX_KERNEL", "/nonexistent/vmlinuz")
	if _, err := FindKernel(); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "LIBBOX_KERNEL=/nonexistent/vmlinuz") {
		t.Errorf("missing LIBBOX_KERNEL: %v", err)
	}
	k := filepath.Join(t.TempDir(), "vmlinuz")
	must(t, os.WriteFile(k, []byte("x"), 0o644))
	t.Setenv("LIBBOX_KERNEL", k)
	t.Setenv("LIBBOX_KERNEL_MODULES", "/nonexistent/modules")
	if _, err := FindKernel(); !errdefs.IsNotFound(err) {
		t.Errorf("missing LIBBOX_KERNEL_MODULES: %v", err)
	}
	t.Setenv("LIBBOX_KERNEL_MODULES", "")
	got, err := FindKernel()
	if err != nil || got.Image != k || got.Modules != "" {
		t.Errorf("FindKernel = %+v, %v", got, err)
	}
}

// TestBaseDiskConcurrent builds one image's base disk from many goroutines:
// one build, one file, the same answer everywhere.
func TestBaseDiskConcurrent(t *testing.T) {
	if _, err := lookTool("mkfs.ext4", "e2fsprogs"); err != nil {
		skipOrFail(t, "%v", err)
	}
	img := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(img, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(img, "etc/a.txt"), []byte("a"), 0o644))
	cache := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 4
	paths := make(chan string, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			p, err := baseDisk(ctx, cache, img, "sha256:abc/def")
			paths <- p
			errs <- err
		}()
	}
	first := ""
	for range n {
		p, err := <-paths, <-errs
		if err != nil {
			t.Fatal(err)
		}
		if first == "" {
			first = p
		} else if p != first {
			t.Errorf("paths differ: %s, %s", p, first)
		}
	}
	ents, _ := os.ReadDir(filepath.Dir(first))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"sha256_abc_def.ext4", "sha256_abc_def.ext4.lock"}) {
		t.Errorf("disk cache holds %v", names)
	}
	if st, err := os.Stat(first); err != nil || st.Size() < diskMin {
		t.Errorf("base disk %v, %v", st, err)
	}
}

func TestStartBadSpec(t *testing.T) {
	dir := t.TempDir()
	img := t.TempDir()
	script := filepath.Join(t.TempDir(), "agent.sh")
	must(t, os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755))
	long := filepath.Join(dir, strings.Repeat("d", 100))
	must(t, os.MkdirAll(long, 0o755))
	good := backend.Spec{ID: "x", Dir: dir, ImageRoot: img, AgentPath: script}
	b, err := New(Options{Home: t.TempDir()})
	must(t, err)
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
	if _, err := FindKernel(); err == nil {
		t.Setenv("LIBBOX_ACCEL", "tcg")
		if _, err := b.Start(context.Background(), good); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "not a static ELF") {
			t.Errorf("script as agent: %v", err)
		}
	}
	if _, err := New(Options{}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("New without Home: %v", err)
	}
}
