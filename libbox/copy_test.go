package libbox

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/libbox/libbox/errdefs"
)

func tarStream(t *testing.T, hs ...*tar.Header) *bytes.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hs {
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(h.Name))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			_, _ = tw.Write([]byte(h.Name))
		}
	}
	_ = tw.Close()
	return bytes.NewReader(buf.Bytes())
}

// TestCopyInto: the host side of a copy out follows docker cp's rules, and a
// stream from the box (not trusted) never writes outside the destination.
func TestCopyInto(t *testing.T) {
	dir := func() []*tar.Header {
		return []*tar.Header{{Name: "proj/", Typeflag: tar.TypeDir, Mode: 0o755}, {Name: "proj/a.txt", Typeflag: tar.TypeReg}}
	}
	file := func() []*tar.Header { return []*tar.Header{{Name: "f.txt", Typeflag: tar.TypeReg}} }
	ok := []struct {
		name, dest string // dest below a fresh directory holding dir/ and file
		contents   bool
		tar        []*tar.Header
		want       string
	}{
		{"file into a directory", "dir", false, file(), "dir/f.txt"},
		{"file to a new name", "new.txt", false, file(), "new.txt"},
		{"file over a file", "file", false, file(), "file"},
		{"directory into a directory", "dir", false, dir(), "dir/proj/a.txt"},
		{"directory contents (SRC/.)", "dir/", true, dir(), "dir/a.txt"},
		{"directory to a new name", "newdir", false, dir(), "newdir/a.txt"},
	}
	for _, c := range ok {
		base := t.TempDir()
		_ = os.Mkdir(filepath.Join(base, "dir"), 0o755)
		_ = os.WriteFile(filepath.Join(base, "file"), []byte("old"), 0o644)
		if _, err := copyInto(tarStream(t, c.tar...), base+"/"+c.dest, c.contents); err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if fi, err := os.Lstat(filepath.Join(base, c.want)); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("%s: %s not written: %v", c.name, c.want, err)
		}
	}
	outside := t.TempDir()
	bad := []struct {
		name, dest string
		tar        []*tar.Header
		class      errdefs.Code
	}{
		{"directory onto a file", "file", dir(), errdefs.FailedPrecondition},
		{"file to a missing directory/", "missing/", file(), errdefs.NotFound},
		{"missing parent", "no/such/x", file(), errdefs.NotFound},
		{"the box's / into a directory", "dir", []*tar.Header{{Name: "./", Typeflag: tar.TypeDir}}, errdefs.InvalidArgument},
		{"top entry climbs", "dir", []*tar.Header{{Name: "../x", Typeflag: tar.TypeReg}}, errdefs.Internal},
		{"entry beside the top", "dir", append(dir(), &tar.Header{Name: "other", Typeflag: tar.TypeReg}), errdefs.Internal},
		{"entry climbs", "dir", append(dir(), &tar.Header{Name: "proj/../../x", Typeflag: tar.TypeReg}), errdefs.Internal},
		{"symlink then write through it", "dir", append(dir(),
			&tar.Header{Name: "proj/s", Typeflag: tar.TypeSymlink, Linkname: outside},
			&tar.Header{Name: "proj/s/evil", Typeflag: tar.TypeReg}), errdefs.InvalidArgument},
		{"relative symlink then write through it", "dir", append(dir(),
			&tar.Header{Name: "proj/s", Typeflag: tar.TypeSymlink, Linkname: "../../../../../../../../" + outside},
			&tar.Header{Name: "proj/s/evil", Typeflag: tar.TypeReg}), errdefs.InvalidArgument},
	}
	for _, c := range bad {
		base := t.TempDir()
		_ = os.Mkdir(filepath.Join(base, "dir"), 0o755)
		_ = os.WriteFile(filepath.Join(base, "file"), []byte("old"), 0o644)
		_, err := copyInto(tarStream(t, c.tar...), base+"/"+c.dest, false)
		if errdefs.CodeOf(err) != c.class {
			t.Errorf("%s: got %v, want %v", c.name, err, c.class)
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("a copy out wrote outside its destination: %v", ents)
	}
}
