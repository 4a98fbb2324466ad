package agent

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/agentpb"
)

// TestCopyRules: copies follow docker cp's rules, box paths resolve as in a
// chroot (relative to /, symlinks inside the root, ".." stopping at it), and
// nothing lands outside the root.
func TestCopyRules(t *testing.T) {
	root := chrootRoot(t)
	outside := t.TempDir()
	for _, l := range [][2]string{{"/", "tmp/rootlink"}, {"../../../../../..", "tmp/climb"}, {outside, "escape"}, {"/etc/passwd", "tmp/pwlink"}} {
		if err := os.Symlink(l[0], filepath.Join(root, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "data/dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "data/file"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Options{Root: root})
	ctx := within(t, 30*time.Second)
	file := func() []byte { return tarOf(t, &tar.Header{Name: "f.txt", Typeflag: tar.TypeReg}) }
	dir := func() []byte {
		return tarOf(t, &tar.Header{Name: "proj/", Typeflag: tar.TypeDir, Mode: 0o755},
			&tar.Header{Name: "proj/a.txt", Typeflag: tar.TypeReg},
			&tar.Header{Name: "proj/h", Typeflag: tar.TypeLink, Linkname: "proj/a.txt"})
	}
	ok := []struct {
		name, dest string
		contents   bool
		tar        []byte
		want       string // a root-relative file that must exist afterwards
	}{
		{"file into a directory", "/data/dir", false, file(), "data/dir/f.txt"},
		{"file to a new name", "/data/new.txt", false, file(), "data/new.txt"},
		{"file over a file", "/data/file", false, file(), "data/file"},
		{"directory into a directory", "/data/dir", false, dir(), "data/dir/proj/h"},
		{"directory contents (SRC/.)", "/data/dir/", true, dir(), "data/dir/a.txt"},
		{"directory to a new name", "/data/newdir", false, dir(), "data/newdir/a.txt"},
		{"contents to a new name", "/data/newdir2", true, dir(), "data/newdir2/h"},
		{"relative to the box's /", "data/rel.txt", false, file(), "data/rel.txt"},
		{"through a symlink to /", "/tmp/rootlink/etc/x", false, file(), "etc/x"},
		{".. stops at the root", "/tmp/../../../etc/y", false, file(), "etc/y"},
		{"climbing symlink", "/tmp/climb/etc/z", false, file(), "etc/z"},
		{"absolute symlink to a host path", "/escape/w", false, file(), strings.TrimPrefix(outside, "/") + "/w"},
		{"into / by name", "/", false, file(), "f.txt"},
	}
	for _, c := range ok {
		if err := uploadWith(ctx, h.client, &agentpb.UploadRequest{Dest: c.dest, Contents: c.contents}, c.tar); err != nil {
			t.Errorf("%s: copy to %s: %v", c.name, c.dest, err)
			continue
		}
		if fi, err := os.Lstat(filepath.Join(root, c.want)); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("%s: copy to %s: %s not written: %v", c.name, c.dest, c.want, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(root, "data/file")); string(b) != "content of f.txt" {
		t.Errorf("file over a file: %q", b)
	}
	if _, err := os.Stat(filepath.Join(root, "data/newdir/proj")); err == nil {
		t.Errorf("directory to a new name nested the source under it")
	}
	bad := []struct {
		name, dest string
		tar        []byte
		is         func(error) bool
	}{
		{"directory onto a file", "/data/file", dir(), errdefs.IsFailedPrecondition},
		{"file to a missing directory/", "/data/missing/", file(), errdefs.IsNotFound},
		{"file to a file/", "/data/file/", file(), errdefs.IsFailedPrecondition},
		{".. below a missing directory", "/nope/../etc/q", file(), errdefs.IsNotFound},
		{"top entry climbs", "/data", tarOf(t, &tar.Header{Name: "../x", Typeflag: tar.TypeReg}), errdefs.IsInvalidArgument},
		{"entry beside the top", "/data", tarOf(t, &tar.Header{Name: "d/", Typeflag: tar.TypeDir}, &tar.Header{Name: "e", Typeflag: tar.TypeReg}), errdefs.IsInvalidArgument},
		{"entry climbs", "/data", tarOf(t, &tar.Header{Name: "d/", Typeflag: tar.TypeDir}, &tar.Header{Name: "d/../../x", Typeflag: tar.TypeReg}), errdefs.IsInvalidArgument},
		{"symlink then write through it", "/data", tarOf(t, &tar.Header{Name: "d/", Typeflag: tar.TypeDir},
			&tar.Header{Name: "d/s", Typeflag: tar.TypeSymlink, Linkname: outside}, &tar.Header{Name: "d/s/evil", Typeflag: tar.TypeReg}), errdefs.IsInvalidArgument},
		{"NUL in the path", "/data/\x00", file(), errdefs.IsInvalidArgument},
	}
	for _, c := range bad {
		if err := uploadWith(ctx, h.client, &agentpb.UploadRequest{Dest: c.dest}, c.tar); !c.is(err) {
			t.Errorf("%s: copy to %q: got %v", c.name, c.dest, err)
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("files written outside the root: %v", ents)
	}

	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	downs := []struct{ path, entry, want string }{
		{"/tmp/rootlink/etc/passwd", "passwd", string(passwd)},
		{"tmp/rootlink/etc/passwd", "passwd", string(passwd)},
		{"/../../etc/passwd", "passwd", string(passwd)},
		{"/tmp/climb/etc/passwd", "passwd", string(passwd)},
		{"/tmp/pwlink", "pwlink", "-> /etc/passwd"},
		{"/tmp/rootlink", "rootlink", "-> /"},
		{"/tmp/rootlink/", "./", "<dir>"},
		{"/tmp/rootlink/.", "./etc/passwd", string(passwd)},
		{"/data/dir/.", "dir/a.txt", "content of proj/a.txt"},
	}
	for _, c := range downs {
		got, err := download(ctx, h.client, c.path)
		if err != nil || got[c.entry] != c.want {
			t.Errorf("download %s: entry %s = %q, want %q (%v)", c.path, c.entry, got[c.entry], c.want, err)
		}
	}
	for _, p := range []string{"/escape/x", "/nope/../etc/passwd", "/no/such"} {
		if _, err := download(ctx, h.client, p); !errdefs.IsNotFound(err) {
			t.Errorf("download %s: got %v, want NotFound", p, err)
		}
	}
}
