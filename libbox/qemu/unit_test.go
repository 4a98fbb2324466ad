package qemu

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/libbox/libbox/guest/boot"
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
	vols := []boot.Volume{{Tag: "vol0", BoxPath: "/mnt/my src,x:y", ReadOnly: true}, {Tag: "vol1", BoxPath: "/data"}}
	s := boot.FormatVolumes(vols)
	if strings.ContainsAny(s, " \t") {
		t.Fatalf("volumes parameter %q has blanks", s)
	}
	got, err := boot.ParseVolumes(s)
	if err != nil || !slices.Equal(got, vols) {
		t.Fatalf("ParseVolumes(%q) = %v, %v", s, got, err)
	}
	for _, bad := range []string{"vol0", "vol0:rel/path", ":/x", "vol0:/x:rx"} {
		if _, err := boot.ParseVolumes(bad); err == nil {
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
