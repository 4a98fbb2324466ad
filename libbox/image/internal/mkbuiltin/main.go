// Command mkbuiltin writes libbox's builtin "busybox" image: a gzipped rootfs
// tar holding a static busybox, one symlink per applet, a minimal /etc and
// the usual top-level directories. It is run by scripts/image.sh at build time
// (image_prebuild) and its output is embedded by package image.
//
// The output must be deterministic (sorted entries, fixed times and owners,
// no gzip name or time) so that the image ID stays stable across builds. It
// must never read anything from the host other than the busybox binary.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// epoch is the mtime of every entry (fixed, so the digest is stable).
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

type entry struct {
	name     string
	typ      byte
	mode     int64
	uid, gid int
	data     []byte
	link     string
}

func main() {
	bbPath := flag.String("busybox", "/bin/busybox", "static busybox binary (Debian package busybox-static)")
	out := flag.String("o", "", "output .tar.gz")
	flag.Parse()
	if *out == "" {
		fail("-o is required")
	}
	if err := run(*bbPath, *out); err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "mkbuiltin:", msg)
	os.Exit(1)
}

func run(bbPath, out string) error {
	bin, err := os.ReadFile(bbPath)
	if err != nil {
		return fmt.Errorf("read busybox: %w (install Debian's busybox-static)", err)
	}
	list, err := exec.Command(bbPath, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("%s --list-full: %w (is it busybox-static?)", bbPath, err)
	}

	entries := map[string]entry{}
	dir := func(name string, mode int64, uid, gid int) {
		entries[name] = entry{name: name, typ: tar.TypeDir, mode: mode, uid: uid, gid: gid}
	}
	file := func(name string, mode int64, data string) {
		entries[name] = entry{name: name, typ: tar.TypeReg, mode: mode, data: []byte(data)}
	}
	for _, d := range []string{"bin", "dev", "etc", "home", "mnt", "proc", "run", "sbin", "sys",
		"usr", "usr/bin", "usr/sbin", "usr/local", "usr/local/bin", "var"} {
		dir(d, 0o755, 0, 0)
	}
	dir("root", 0o700, 0, 0)
	dir("tmp", 0o1777, 0, 0)
	dir("var/tmp", 0o1777, 0, 0)
	dir("home/box", 0o755, 1000, 1000)
	entries["bin/busybox"] = entry{name: "bin/busybox", typ: tar.TypeReg, mode: 0o755, data: bin}
	file("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n"+
		"box:x:1000:1000:box:/home/box:/bin/sh\n"+
		"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
	file("etc/group", 0o644, "root:x:0:\nbox:x:1000:\nnogroup:x:65534:\n")
	file("etc/hostname", 0o644, "box\n")

	for _, line := range strings.Split(string(list), "\n") {
		name := strings.Trim(strings.TrimSpace(line), "/")
		if name == "" || name == "bin/busybox" {
			continue
		}
		name = path.Clean(name)
		if strings.HasPrefix(name, "..") {
			return fmt.Errorf("odd applet path %q", line)
		}
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			if _, ok := entries[d]; !ok {
				dir(d, 0o755, 0, 0)
			}
		}
		entries[name] = entry{name: name, typ: tar.TypeSymlink, mode: 0o777, link: "/bin/busybox"}
	}

	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)

	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	for _, n := range names {
		e := entries[n]
		h := &tar.Header{
			Typeflag: e.typ, Name: e.name, Linkname: e.link, Mode: e.mode,
			Uid: e.uid, Gid: e.gid, ModTime: epoch, Format: tar.FormatPAX,
		}
		if e.typ == tar.TypeDir {
			h.Name += "/"
		}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if len(e.data) > 0 {
			if _, err := tw.Write(e.data); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}
