package vmboot

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// guestModules are the kernel modules a box may need, by module name: the
// initramfs carries each (with its dependencies) when the kernel has it as a
// module; built-in or absent ones are skipped (optional ones silently). The
// command line (Box.Modules) says which of them a box loads.
var guestModules = []guestModule{
	{"virtio_pci", false},  // -M pc / q35
	{"virtio_mmio", false}, // -M microvm
	{"virtio_blk", true},
	{"virtio_console", true},
	{"virtiofs", false},                   // volumes
	{"virtio_net", false},                 // Spec.Network (with failover, net_failover: its deps)
	{"vmw_vsock_virtio_transport", false}, // vsock transport
}

type guestModule struct {
	name     string
	required bool // the box cannot boot without it (unless built in)
}

// module is one kernel module file.
type module struct {
	name string // normalised (dashes as underscores)
	path string // relative to the modules dir
	deps []string
	data []byte // uncompressed ELF
}

// modName normalises a module name or file name to the kernel's form.
func modName(file string) string {
	b := filepath.Base(file)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

// moduleIndex maps module names to files below dir, and lists built-ins.
type moduleIndex struct {
	dir     string
	files   map[string]string // name -> path relative to dir
	builtin map[string]bool
	loadFn  func(name string) (*module, error) // tests: replaces reading files
}

func indexModules(dir string) (*moduleIndex, error) {
	ix := &moduleIndex{dir: dir, files: map[string]string{}, builtin: map[string]bool{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && strings.Contains(d.Name(), ".ko") {
			rel, _ := filepath.Rel(dir, p)
			ix.files[modName(d.Name())] = rel
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kernel modules %s: %w", dir, err)
	}
	if f, err := os.Open(filepath.Join(dir, "modules.builtin")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			ix.builtin[modName(sc.Text())] = true
		}
		f.Close()
	}
	return ix, nil
}

// load reads and decompresses one module and its .modinfo dependencies.
func (ix *moduleIndex) load(name string) (*module, error) {
	if ix.loadFn != nil {
		return ix.loadFn(name)
	}
	rel, ok := ix.files[name]
	if !ok {
		return nil, fmt.Errorf("kernel module %s not found in %s", name, ix.dir)
	}
	data, err := readModule(filepath.Join(ix.dir, rel))
	if err != nil {
		return nil, err
	}
	deps, err := modinfoDepends(data)
	if err != nil {
		return nil, fmt.Errorf("kernel module %s: %w", rel, err)
	}
	rel = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(rel, ".xz"), ".zst"), ".gz")
	return &module{name: name, path: rel, deps: deps, data: data}, nil
}

// readModule returns the ELF bytes of a module file, decompressing
// .ko.gz, .ko.zst (in Go) and .ko.xz (with xz(1)): the guest loads plain
// ELF with finit_module and needs no decompressor.
func readModule(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	switch {
	case strings.HasSuffix(path, ".ko"):
		return raw, nil
	case strings.HasSuffix(path, ".ko.gz"):
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return io.ReadAll(zr)
	case strings.HasSuffix(path, ".ko.zst"):
		zr, err := zstd.NewReader(nil)
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		out, err := zr.DecodeAll(raw, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return out, nil
	case strings.HasSuffix(path, ".ko.xz"):
		cmd := exec.Command("xz", "-dc")
		cmd.Stdin = bytes.NewReader(raw)
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("%s: xz -dc: %w (install xz-utils)", path, err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: unknown module compression", path)
}

// modinfoDepends returns the depends= field of an ELF module's .modinfo.
func modinfoDepends(data []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("no .modinfo section")
	}
	info, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d = strings.TrimSpace(d); d != "" {
					deps = append(deps, modName(d))
				}
			}
			return deps, nil
		}
	}
	return nil, nil
}

// resolveModules returns the modules to load for the wanted names,
// dependencies before the modules that need them, each once. A wanted
// module that is built in is skipped; a missing optional one too.
// boxModules reads the modules under dir and resolves guestModules and their
// dependencies in load order. With strict, a missing module the box cannot
// boot without is an error; without, missing modules are left out.
func boxModules(dir string, strict bool) ([]*module, error) {
	ix, err := indexModules(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(guestModules))
	required := map[string]bool{}
	for _, m := range guestModules {
		names = append(names, m.name)
		required[m.name] = strict && m.required
	}
	return resolveModules(ix, names, required)
}

func resolveModules(ix *moduleIndex, wanted []string, required map[string]bool) ([]*module, error) {
	var order []*module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("kernel modules: dependency cycle %s", strings.Join(append(chain, name), " -> "))
		}
		if _, ok := ix.files[name]; !ok {
			if ix.builtin[name] || (!required[name] && len(chain) == 0) {
				state[name] = 2
				return nil
			}
			return fmt.Errorf("kernel module %s (needed by %s) is neither in %s nor built in: use a kernel with virtio support (e.g. linux-image-cloud-amd64)",
				name, strings.Join(append(chain, "box"), " <- "), ix.dir)
		}
		state[name] = 1
		m, err := ix.load(name)
		if err != nil {
			return err
		}
		for _, d := range m.deps {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, m)
		return nil
	}
	for _, w := range wanted {
		if err := visit(w, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}
