package image

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libbox/libbox/errdefs"
)

// TestUnpackRejectsEscapes feeds layers that try to write outside the root
// and checks each is refused, naming the entry, or (for symlinks, resolved
// inside the root as the image's programs see them, like umoci and
// containerd do) lands inside the root; nothing outside changes.
func TestUnpackRejectsEscapes(t *testing.T) {
	for _, c := range []struct {
		name    string
		entries []tarEntry
		naming  string
		inside  string // no error: this path appears inside the root instead
	}{
		{"dotdot", []tarEntry{{name: "../x", body: "evil"}}, "../x", ""},
		{"dotdot inside", []tarEntry{{name: "a/../../x", body: "evil"}}, "a/../../x", ""},
		{"absolute", []tarEntry{{name: "/abs", body: "evil"}}, "/abs", ""},
		{"write through symlink", []tarEntry{
			{name: "evil", typ: tar.TypeSymlink, link: "../outside"},
			{name: "evil/planted", body: "evil"},
		}, "", "outside/planted"},
		{"write through absolute symlink", []tarEntry{
			{name: "evil", typ: tar.TypeSymlink, link: "/"},
			{name: "evil/planted", body: "evil"},
		}, "", "planted"},
		{"write through symlink climbing far", []tarEntry{
			{name: "a/b/evil", typ: tar.TypeSymlink, link: "../../../../../../outside"},
			{name: "a/b/evil/planted", body: "evil"},
		}, "", "outside/planted"},
		{"mkdir through symlink", []tarEntry{
			{name: "evil", typ: tar.TypeSymlink, link: "../outside"},
			{name: "evil/newdir/", typ: tar.TypeDir},
		}, "", "outside/newdir"},
		{"whiteout through symlink", []tarEntry{
			{name: "evil", typ: tar.TypeSymlink, link: "../outside"},
			{name: "evil/.wh.secret"},
		}, "", "evil"},
		{"symlink loop", []tarEntry{
			{name: "loop", typ: tar.TypeSymlink, link: "loop"},
			{name: "loop/x", body: "x"},
		}, "loop/x", ""},
		{"whiteout of the parent", []tarEntry{{name: "etc/.wh.."}}, "etc/.wh..", ""},
		{"hardlink to outside", []tarEntry{{name: "hl", typ: tar.TypeLink, link: "../outside/secret"}}, "hl", ""},
		{"hardlink absolute", []tarEntry{{name: "hl", typ: tar.TypeLink, link: "/etc/passwd"}}, "hl", ""},
		{"hardlink through symlink", []tarEntry{
			{name: "evil", typ: tar.TypeSymlink, link: "../outside"},
			{name: "hl", typ: tar.TypeLink, link: "evil/secret"},
		}, "hl", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			outside := filepath.Join(base, "outside")
			os.Mkdir(outside, 0o755)
			secret := filepath.Join(outside, "secret")
			os.WriteFile(secret, []byte("keep"), 0o644)
			rootDir := filepath.Join(base, "root")
			os.Mkdir(rootDir, 0o755)

			u, err := newUnpacker(rootDir)
			if err != nil {
				t.Fatal(err)
			}
			defer u.close()
			err = u.apply(context.Background(), bytes.NewReader(tarBytes(t, c.entries...)), "sha256:test")
			if c.inside != "" {
				if err != nil {
					t.Fatalf("err = %v, want the entry resolved inside the root", err)
				}
				if _, err := os.Lstat(filepath.Join(rootDir, c.inside)); err != nil {
					t.Errorf("%s is not inside the root: %v", c.inside, err)
				}
			} else if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), `"`+c.naming+`"`) {
				t.Fatalf("err = %v, want InvalidArgument naming %q", err, c.naming)
			}
			ents, _ := os.ReadDir(outside)
			if len(ents) != 1 || mustRead(t, secret) != "keep" {
				t.Errorf("outside changed: %v", ents)
			}
			if _, err := os.Stat(filepath.Join(base, "x")); err == nil {
				t.Error("x was written outside the root")
			}
		})
	}
}

// TestUnpackThroughInnerSymlink checks that symlinks staying inside the
// root (merged /usr) are followed within it.
func TestUnpackThroughInnerSymlink(t *testing.T) {
	rootDir := t.TempDir()
	u, err := newUnpacker(rootDir)
	if err != nil {
		t.Fatal(err)
	}
	defer u.close()
	err = u.apply(context.Background(), bytes.NewReader(tarBytes(t,
		tarEntry{name: "usr/bin/", typ: tar.TypeDir},
		tarEntry{name: "bin", typ: tar.TypeSymlink, link: "usr/bin"},
		tarEntry{name: "bin/tool", body: "t", mode: 0o755},
		tarEntry{name: "file", body: "old"},
		tarEntry{name: "file", body: "new"},
		tarEntry{name: "dir-then-file/", typ: tar.TypeDir},
		tarEntry{name: "dir-then-file", body: "file now"},
	)), "sha256:test")
	if err != nil {
		t.Fatal(err)
	}
	if err := u.finish(); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, filepath.Join(rootDir, "usr/bin/tool")); got != "t" {
		t.Errorf("usr/bin/tool = %q", got)
	}
	if got := mustRead(t, filepath.Join(rootDir, "file")); got != "new" {
		t.Errorf("file = %q", got)
	}
	if got := mustRead(t, filepath.Join(rootDir, "dir-then-file")); got != "file now" {
		t.Errorf("dir-then-file = %q", got)
	}
}

// TestEscapingImageIsNotStored pulls an unsafe image through the store:
// the error names the entry and no image is left behind.
func TestEscapingImageIsNotStored(t *testing.T) {
	reg := newTestRegistry(t)
	bad := tarLayer(t, tarEntry{name: "../../escape", body: "evil"})
	ref := reg.push("test/unsafe", "v1", buildImage(t, testConfig, hostArch(), busyboxLayer(t), bad), nil)
	s := openStore(t, reg.host)
	_, err := s.Get(testCtx(t), ref, Options{})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "../../escape") {
		t.Fatalf("unsafe image: %v, want InvalidArgument naming the entry", err)
	}
	if roots, _ := os.ReadDir(filepath.Join(s.dir, "roots")); len(roots) != 0 {
		t.Errorf("an unsafe image left roots %v", roots)
	}
	if tmp, _ := os.ReadDir(s.tmpDir()); len(tmp) != 0 {
		t.Errorf("tmp not cleaned: %v", tmp)
	}
}

// applyLayers unpacks layers (lists of entries) in order into a new root.
func applyLayers(t *testing.T, layers ...[]tarEntry) string {
	t.Helper()
	rootDir := t.TempDir()
	u, err := newUnpacker(rootDir)
	if err != nil {
		t.Fatal(err)
	}
	defer u.close()
	for i, l := range layers {
		if err := u.apply(context.Background(), bytes.NewReader(tarBytes(t, l...)), "layer"+string(rune('0'+i))); err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
	}
	if err := u.finish(); err != nil {
		t.Fatal(err)
	}
	return rootDir
}

// TestOpaqueMarkerAfterOwnFiles: an opaque marker hides the lower layers'
// content of its directory at any depth, wherever it comes in the tar, and
// never the layer's own entries (issue 20, item 3).
func TestOpaqueMarkerAfterOwnFiles(t *testing.T) {
	root := applyLayers(t,
		[]tarEntry{
			{name: "d/", typ: tar.TypeDir},
			{name: "d/lower", body: "lower"},
			{name: "d/sub/lower", body: "lower"},
			{name: "d/keep/lower", body: "lower"},
			{name: "w/lower", body: "lower"},
		},
		[]tarEntry{
			{name: "d/own", body: "own"},
			{name: "d/sub/own", body: "own"}, // implicit parent d/sub
			{name: "d/keep/", typ: tar.TypeDir},
			{name: "d/.wh..wh..opq"},
			{name: "d/after", body: "after"},
			{name: "w/own", body: "own"},
			{name: ".wh.w"}, // whiteout of a dir this layer wrote into
		},
	)
	for _, p := range []string{"d/own", "d/sub/own", "d/after", "w/own"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("%s (written by the upper layer) is gone: %v", p, err)
		}
	}
	for _, p := range []string{"d/lower", "d/sub/lower", "d/keep/lower", "w/lower"} {
		mustNotExist(t, filepath.Join(root, p))
	}
	if _, err := os.Stat(filepath.Join(root, "d/keep")); err != nil {
		t.Errorf("d/keep (an upper directory entry) is gone: %v", err)
	}
}

// TestWriteThroughAbsoluteSymlink: a later layer writing through a lower
// layer's absolute directory symlink (var/run -> /run in Debian images)
// lands in the image's /run (issue 20, item 4).
func TestWriteThroughAbsoluteSymlink(t *testing.T) {
	root := applyLayers(t,
		[]tarEntry{
			{name: "run/", typ: tar.TypeDir},
			{name: "var/", typ: tar.TypeDir},
			{name: "var/run", typ: tar.TypeSymlink, link: "/run"},
			{name: "usr/lib/", typ: tar.TypeDir},
			{name: "lib", typ: tar.TypeSymlink, link: "/usr/lib"},
		},
		[]tarEntry{
			{name: "var/run/lock/", typ: tar.TypeDir},
			{name: "var/run/app.pid", body: "1"},
			{name: "lib/libx.so", body: "elf"},
			{name: "lib/libx.so.1", typ: tar.TypeLink, link: "lib/libx.so"},
			{name: "var/run/.wh.gone"},
		},
	)
	if got := mustRead(t, filepath.Join(root, "run/app.pid")); got != "1" {
		t.Errorf("run/app.pid = %q", got)
	}
	if fi, err := os.Stat(filepath.Join(root, "run/lock")); err != nil || !fi.IsDir() {
		t.Errorf("run/lock: %v %v", fi, err)
	}
	a, err1 := os.Stat(filepath.Join(root, "usr/lib/libx.so"))
	b, err2 := os.Stat(filepath.Join(root, "usr/lib/libx.so.1"))
	if err1 != nil || err2 != nil || !os.SameFile(a, b) {
		t.Errorf("usr/lib/libx.so.1 is not a hard link of libx.so: %v %v", err1, err2)
	}
	if l, err := os.Readlink(filepath.Join(root, "var/run")); err != nil || l != "/run" {
		t.Errorf("var/run -> %q, %v: the symlink itself must stay", l, err)
	}
}
