package tarcopy

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/libbox/libbox/errdefs"
)

func TestPlace(t *testing.T) {
	for _, c := range []struct {
		dest     string
		d        Dest
		top      string
		srcDir   bool
		contents bool
		into     bool
		name     string
		code     errdefs.Code
	}{
		{"/d", Dir, "f", false, false, true, "f", errdefs.OK},
		{"/d", Dir, "src", true, true, true, "", errdefs.OK},
		{"/d", Dir, "src", true, false, true, "src", errdefs.OK},
		{"/d", Dir, ".", true, false, false, "", errdefs.InvalidArgument},
		{"/f", File, "f", false, false, false, "", errdefs.OK},
		{"/f", File, "src", true, false, false, "", errdefs.FailedPrecondition},
		{"/f/", File, "f", false, false, false, "", errdefs.FailedPrecondition},
		{"/n", Missing, "f", false, false, false, "", errdefs.OK},
		{"/n/", Missing, "f", false, false, false, "", errdefs.NotFound},
		{"/n/", Missing, "src", true, false, false, "", errdefs.OK},
		{"/n/.", Missing, "f", false, false, false, "", errdefs.NotFound},
	} {
		into, name, err := Place("copy", c.dest, c.d, c.top, c.srcDir, c.contents)
		if errdefs.CodeOf(err) != c.code || (err == nil && (into != c.into || name != c.name)) {
			t.Errorf("Place(%q, %v, %q, dir=%v, contents=%v) = %v %q %v; want %v %q %v", c.dest, c.d, c.top, c.srcDir, c.contents, into, name, err, c.into, c.name, c.code)
		}
	}
}

func TestPlacers(t *testing.T) {
	r := Renamer("d", "top", "new")
	if p, ok, err := r("top/a/b"); err != nil || !ok || p != "d/new/a/b" {
		t.Errorf("Renamer: %q %v %v", p, ok, err)
	}
	if _, ok, err := Renamer("d", "top", "")("top/"); err != nil || ok {
		t.Errorf("Renamer contents: the top entry is not skipped (%v %v)", ok, err)
	}
	for _, bad := range []string{"other/x", "topx", "top/../x", "top/a/../../x"} {
		if _, _, err := r(bad); errdefs.CodeOf(err) != errdefs.InvalidArgument {
			t.Errorf("Renamer(%q): %v", bad, err)
		}
	}
	b := Below("d")
	if p, ok, err := b("a/./b"); err != nil || !ok || p != "d/a/b" {
		t.Errorf("Below: %q %v %v", p, ok, err)
	}
	for _, bad := range []string{"", "/etc/passwd", "../x", "a/../../x"} {
		if _, _, err := b(bad); errdefs.CodeOf(err) != errdefs.InvalidArgument {
			t.Errorf("Below(%q): %v", bad, err)
		}
	}
}

// TestExtractStaysInRoot: an entry that goes through a symlink an earlier
// entry planted, or replaces one, never writes outside the root.
func TestExtractStaysInRoot(t *testing.T) {
	outside := t.TempDir()
	dir := t.TempDir()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body string) {
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	add(&tar.Header{Name: "top/", Typeflag: tar.TypeDir, Mode: 0o500}, "")
	add(&tar.Header{Name: "top/f", Typeflag: tar.TypeReg, Mode: 0o640}, "hello")
	add(&tar.Header{Name: "top/h", Typeflag: tar.TypeLink, Linkname: "top/f"}, "")
	add(&tar.Header{Name: "top/esc", Typeflag: tar.TypeSymlink, Linkname: outside}, "")
	add(&tar.Header{Name: "top/l", Typeflag: tar.TypeSymlink, Linkname: filepath.Join(outside, "x")}, "")
	add(&tar.Header{Name: "top/l", Typeflag: tar.TypeReg, Mode: 0o644}, "replaced")
	add(&tar.Header{Name: "top/esc/y", Typeflag: tar.TypeReg, Mode: 0o644}, "escape")
	tw.Close()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	tr := tar.NewReader(&buf)
	n, entries, err := Extract(root, tr, nil, Renamer(".", "top", "out"), 0o700)
	if _, ok := err.(*EntryError); !ok {
		t.Fatalf("write through a planted symlink: want an EntryError, got %v", err)
	}
	if n != int64(len("hello")+len("replaced")) || entries != 7 {
		t.Errorf("Extract wrote %d bytes in %d entries", n, entries)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "out", "l")); string(got) != "replaced" {
		t.Errorf("a file over a symlink: %q", got)
	}
	if st, _ := os.Stat(filepath.Join(dir, "out", "h")); st == nil || st.Size() != 5 {
		t.Errorf("hard link: %v", st)
	}
	if st, _ := os.Stat(filepath.Join(dir, "out")); st == nil || st.Mode().Perm() != 0o700 {
		t.Errorf("directory mode with dirMode 0o700: %v", st)
	}
	if st, _ := os.Stat(filepath.Join(dir, "out", "f")); st == nil || st.Mode().Perm() != 0o640 {
		t.Errorf("file mode: %v", st)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("Extract wrote outside its root: %v", ents)
	}
}
