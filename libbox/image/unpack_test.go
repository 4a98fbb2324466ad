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
// and checks each is refused, naming the entry, and that nothing outside
// changed.
func TestUnpackRejectsEscapes(t *testing.T) {
	for _, c := range []struct {
		name    string
		entries []tarEntry
		naming  string
	}{
		{"dotdot", []tarEntry{{name: "../x", body: "evil"}}, "../x"},
		{"dotdot inside", []tarEntry{{name: "a/../../x", body: "evil"}}, "a/../../x"},
		{"absolute", []tarEntry{{name: "/abs", body: "evil"}}, "/abs"},
		{"write through symlink", []tarEntry{
			{name: "evil", typ: tar.TypeSymlink, link: "../outside"},
			{name: "evil/planted", body: "evil"},
		}, "evil/planted"},
		{"write through absolute symlink", []tarEntry{
			{name: "evil", typ: tar.TypeSymlink, link: "/"},
			{name: "evil/planted", body: "evil"},
		}, "evil/planted"},
		{"mkdir through symlink", []tarEntry{
			{name: "evil", typ: tar.TypeSymlink, link: "../outside"},
			{name: "evil/newdir/", typ: tar.TypeDir},
		}, "evil/newdir/"},
		{"whiteout through symlink", []tarEntry{
			{name: "evil", typ: tar.TypeSymlink, link: "../outside"},
			{name: "evil/.wh.secret"},
		}, "evil/.wh.secret"},
		{"whiteout of the parent", []tarEntry{{name: "etc/.wh.."}}, "etc/.wh.."},
		{"hardlink to outside", []tarEntry{{name: "hl", typ: tar.TypeLink, link: "../outside/secret"}}, "hl"},
		{"hardlink absolute", []tarEntry{{name: "hl", typ: tar.TypeLink, link: "/etc/passwd"}}, "hl"},
		{"hardlink through symlink", []tarEntry{
			{name: "evil", typ: tar.TypeSymlink, link: "../outside"},
			{name: "hl", typ: tar.TypeLink, link: "evil/secret"},
		}, "hl"},
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
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), `"`+c.naming+`"`) {
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
