package agent

import (
	"os"
	"path/filepath"
	"testing"
)

// TestResolveInRootFastPath: with root "/", resolveIn is one stat; it must
// find the same file (or fail the same way) as the lookup inside another
// root does, for relative symlinks, ".." after a symlink, a dangling link,
// a file used as a directory and a link loop. Inside a root, an absolute
// link restarts at the root and ".." stops there.
func TestResolveInRootFastPath(t *testing.T) {
	dir := t.TempDir()
	mk := func(p string) {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ln := func(target, p string) {
		if err := os.Symlink(target, filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	mk("a/b/c")
	mk("x")
	if err := os.WriteFile(filepath.Join(dir, "a/b/c/f"), []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	ln("a/b", "l")       // relative link to a directory
	ln("b/c/f", "a/lf")  // relative link to a file
	ln("c/..", "a/b/up") // ".." inside a link's target
	ln("missing", "dangling")
	ln("loop2", "loop1")
	ln("loop1", "loop2")
	for _, p := range []string{
		"a/b/c/f", "l/c/f", "a/lf", "l/up/c/f", "l/../x", "a/b/c/../c/f", "dangling",
		"a/b/c/f/g", "loop1", "nothing/here", ".",
	} {
		_, walkFi, walkErr := resolveIn(dir, "/"+p)
		full, fastFi, fastErr := resolveIn("/", filepath.Join(dir, p))
		if (walkErr == nil) != (fastErr == nil) {
			t.Errorf("%s: walk error %v, fast error %v", p, walkErr, fastErr)
			continue
		}
		if walkErr != nil {
			continue
		}
		if !os.SameFile(walkFi, fastFi) {
			t.Errorf("%s: walk and fast path found different files", p)
		}
		if fi, err := os.Stat(full); err != nil || !os.SameFile(fi, fastFi) {
			t.Errorf("%s: the fast path's path %s does not name what it found (%v)", p, full, err)
		}
	}
	ln("/a/b", "abs")
	ln("../../../../../../../../etc", "up")
	full, _, err := resolveIn(dir, "/abs/c/f")
	if want := filepath.Join(dir, "a/b/c/f"); err != nil || full != want {
		t.Errorf("absolute link in the root: %s, %v; want %s", full, err, want)
	}
	if full, _, err := resolveIn(dir, "/up/passwd"); err == nil {
		t.Errorf("/up/passwd left the root: %s", full)
	}
}
