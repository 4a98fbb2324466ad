package vmboot

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
	"github.com/libbox/libbox/internal/testutil"
	"github.com/libbox/libbox/libbox/backend"
)

func TestMain(m *testing.M) { testutil.Main(m, nil) }

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
	ms, err := resolveModules(ix, []string{"virtio_pci", "virtio_console", "virtio_blk", "virtio_net"}, map[string]bool{"virtio_console": true, "virtio_blk": true})
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
	// virtio_net needs net_failover, which needs failover (unless built in).
	if !ix.builtin["virtio_net"] {
		for _, d := range []string{"failover", "net_failover"} {
			if p, ok := pos[d]; !ix.builtin[d] && (!ok || p > pos["virtio_net"]) {
				t.Errorf("%s missing or after virtio_net in %v", d, pos)
			}
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

// TestFindKernelNamed checks a kernel the caller names: each bad input
// gets its own error class, naming the path and saying what to do.
func TestFindKernelNamed(t *testing.T) {
	dir := t.TempDir()
	k := filepath.Join(dir, "vmlinuz")
	mods := filepath.Join(dir, "6.1.0-test")
	testutil.Must(t, os.WriteFile(k, []byte("x"), 0o644))
	testutil.Must(t, os.Mkdir(mods, 0o755))
	for _, tc := range []struct {
		name, image, modules string
		code                 errdefs.Code
		errHas               string
	}{
		{"missing image", "/nonexistent/vmlinuz", "", errdefs.NotFound, "LIBBOX_KERNEL=/nonexistent/vmlinuz"},
		{"image is a directory", dir, "", errdefs.InvalidArgument, "is not a file"},
		{"missing modules", k, "/nonexistent/modules", errdefs.NotFound, "LIBBOX_KERNEL_MODULES=/nonexistent/modules"},
		{"modules is a file", k, k, errdefs.NotFound, "not a directory"},
	} {
		_, err := FindKernel(tc.image, tc.modules)
		if errdefs.CodeOf(err) != tc.code || err == nil || !strings.Contains(err.Error(), tc.errHas) || !strings.Contains(err.Error(), "build.sh deps") {
			t.Errorf("%s: %v, want %v containing %q and the hint", tc.name, err, tc.code, tc.errHas)
		}
	}
	got, err := FindKernel(k, "")
	if err != nil || got != (Kernel{Image: k}) {
		t.Errorf("FindKernel(image) = %+v, %v", got, err)
	}
	got, err = FindKernel(k, mods)
	if err != nil || got != (Kernel{Image: k, Modules: mods, Version: "6.1.0-test"}) {
		t.Errorf("FindKernel(image, modules) = %+v, %v", got, err)
	}
}

// TestBaseDiskConcurrent builds one image's base disk from many goroutines:
// one build, one file, the same answer everywhere.
func TestBaseDiskConcurrent(t *testing.T) {
	testutil.RequireTool(t, "mkfs.ext4", "e2fsprogs")
	img := t.TempDir()
	testutil.Must(t, os.MkdirAll(filepath.Join(img, "etc"), 0o755))
	testutil.Must(t, os.WriteFile(filepath.Join(img, "etc/a.txt"), []byte("a"), 0o644))
	cache := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 4
	paths := make(chan string, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			p, err := BaseDisk(ctx, cache, img, "sha256:abc/def")
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

// requireKernel returns the guest kernel libbox finds by itself, skipping
// (or failing in CI) when there is none.
func requireKernel(t testing.TB) Kernel {
	t.Helper()
	k, err := FindKernel("", "")
	testutil.Require(t, err, "./build.sh deps")
	return k
}

func TestLimits(t *testing.T) {
	if c, m := Limits(0, -1); c != DefaultCPUs || m != DefaultMemoryMiB {
		t.Errorf("defaults: %d cpus %d MiB", c, m)
	}
	if c, m := Limits(3, 700); c != 3 || m != 700 {
		t.Errorf("limits: %d cpus %d MiB, want 3 and 700", c, m)
	}
}

// TestCmdlineIsWhatTheGuestParses renders command lines and reads them
// back with the agent's own parser (guest/bootparam).
func TestCmdlineIsWhatTheGuestParses(t *testing.T) {
	bare := Cmdline{Console: "ttyS0", Machine: []string{"no_timer_check"}}.String()
	if bare != "console=ttyS0 panic=-1 quiet loglevel=4 no_timer_check" {
		t.Errorf("bare boot: %q", bare)
	}
	if p := bootparam.ParseCmdline(bare); len(p) != 0 {
		t.Errorf("a bare boot has libbox parameters: %v", p)
	}

	serial := Cmdline{Console: "ttyS0", Box: &Box{Transport: "virtio_pci", Port: "org.libbox.agent"}}.String()
	p := bootparam.ParseCmdline(serial)
	if p[bootparam.ParamRoot] != "/dev/vda" || p[bootparam.ParamPort] != "org.libbox.agent" || p[bootparam.ParamModules] != "virtio_pci,virtio_blk,virtio_console" {
		t.Errorf("serial transport: %v", p)
	}
	for _, k := range []string{bootparam.ParamVsock, bootparam.ParamHostname, bootparam.ParamVolumes, bootparam.ParamDebug} {
		if _, ok := p[k]; ok {
			t.Errorf("%s set without reason: %v", k, p)
		}
	}

	box := &Box{Transport: "virtio_mmio", VsockPort: 1024, Hostname: "web1", Network: true, Volumes: []backend.Volume{
		{HostPath: "/h/a", BoxPath: "/data dir/x,y:z"},
		{HostPath: "/h/b", BoxPath: "/ro", ReadOnly: true},
	}}
	line := Cmdline{Console: "hvc0", Debug: true, Box: box}.String()
	if strings.Contains(line, "quiet") || !strings.Contains(line, "loglevel=7") {
		t.Errorf("debug boot is quiet: %q", line)
	}
	p = bootparam.ParseCmdline(line)
	if _, ok := p[bootparam.ParamPort]; ok || p[bootparam.ParamVsock] != "1024" {
		t.Errorf("vsock transport: %v", p)
	}
	if p[bootparam.ParamHostname] != "web1" || p[bootparam.ParamDebug] != "1" {
		t.Errorf("hostname/debug: %v", p)
	}
	wantMods := []string{"virtio_mmio", "virtio_blk", "virtio_console", "vmw_vsock_virtio_transport", "virtiofs", "virtio_net"}
	if got := strings.Split(p[bootparam.ParamModules], ","); !slices.Equal(got, wantMods) {
		t.Errorf("modules %v, want %v", got, wantMods)
	}
	vols, err := bootparam.ParseVolumes(p[bootparam.ParamVolumes])
	if err != nil {
		t.Fatal(err)
	}
	want := []bootparam.Volume{{Tag: VolumeTag(0), BoxPath: "/data dir/x,y:z"}, {Tag: VolumeTag(1), BoxPath: "/ro", ReadOnly: true}}
	if !slices.Equal(vols, want) {
		t.Errorf("volumes = %+v, want %+v", vols, want)
	}
	// Every module a box may load is one the initramfs carries.
	for _, m := range wantMods {
		if !slices.ContainsFunc(guestModules, func(g guestModule) bool { return g.name == m }) {
			t.Errorf("module %s is loaded but not put in the initramfs", m)
		}
	}
}

func TestSelfObjectIsTheTestBinary(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	got, want := selfObject(), exe
	if g, err := filepath.EvalSymlinks(got); err == nil {
		got = g
	}
	if w, err := filepath.EvalSymlinks(want); err == nil {
		want = w
	}
	if got != want {
		t.Fatalf("selfObject() = %q, want the test binary %q", got, want)
	}
}

// A kit written by WriteKernelKit is found by FindKernel's kit search and
// boots the same module set the initramfs needs.
func TestKernelKitLayout(t *testing.T) {
	k, err := FindKernel("", "")
	if err != nil {
		t.Skipf("no guest kernel: %v (./build.sh deps fetches one)", err)
	}
	dst := filepath.Join(t.TempDir(), KitDirName)
	if _, err := WriteKernelKit(k, dst); err != nil {
		t.Fatal(err)
	}
	vers, _ := filepath.Glob(filepath.Join(dst, "*", "boot", "vmlinuz-*"))
	got, ok := newest(vers, func(img string) string { return filepath.Join(filepath.Dir(filepath.Dir(img)), "lib", "modules") })
	if !ok || got.Version != k.Version {
		t.Fatalf("kit not found by the cache search: %v %+v", vers, got)
	}
	ix, err := indexModules(got.Modules)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range guestModules {
		names = append(names, m.name)
	}
	required := map[string]bool{"virtio_console": true, "virtio_blk": true}
	mods, err := resolveModules(ix, names, required)
	if err != nil {
		t.Fatalf("kit lacks a module a box needs: %v", err)
	}
	if len(mods) == 0 || len(ix.files) != len(mods) {
		t.Fatalf("kit has %d modules, boxes load %d: it must hold exactly those", len(ix.files), len(mods))
	}
}
