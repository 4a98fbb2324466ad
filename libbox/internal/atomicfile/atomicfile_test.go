package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	for _, o := range []Options{{}, {Perm: 0o644, Sync: true, SyncDir: true}, {TmpDir: t.TempDir()}} {
		if err := WriteFile(path, []byte("new"), o); err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != "new" {
			t.Fatalf("%+v: read %q, %v", o, b, err)
		}
		fi, _ := os.Stat(path)
		want := o.Perm
		if want == 0 {
			want = 0o600
		}
		if fi.Mode().Perm() != want {
			t.Fatalf("%+v: mode %v, want %v", o, fi.Mode().Perm(), want)
		}
		os.WriteFile(path, []byte("old"), 0o600)
	}
	// A failing fill leaves the old file and no temp file.
	bad := errors.New("fill failed")
	err := Write(path, Options{Sync: true}, func(w io.Writer) error {
		w.Write([]byte("part"))
		return bad
	})
	if !errors.Is(err, bad) {
		t.Fatalf("err = %v, want the fill's", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Fatalf("after a failed write the file reads %q, want the old content", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
	// A directory that does not exist is an error, not a panic or a hang.
	if err := WriteFile(filepath.Join(dir, "no", "f"), nil, Options{}); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}
