package boot

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestInRoot: mount targets resolve as inside a chroot, whatever links the
// image holds, and what is missing is made inside the root.
func TestInRoot(t *testing.T) {
	top := t.TempDir()
	root := filepath.Join(top, "root")
	outside := filepath.Join(top, "outside")
	for _, d := range []string{root, outside, filepath.Join(root, "etc")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"abs":      outside,            // an absolute host path: means root/<that path>
		"up":       "../../../outside", // climbs: stops at the root
		"slash":    "/",
		"dangling": "/made/by/boot",
		"loop":     "loop",
		"etclink":  "etc",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	rows := []struct {
		target string
		kind   create
		want   string // path below root the descriptor names; "" when an error is expected
	}{
		{"/", noCreate, "."},
		{"/etc", noCreate, "etc"},
		{"etc/../../..", noCreate, "."},
		{"/abs/x", createDir, strings.TrimPrefix(outside, "/") + "/x"},
		{"/up/y", createDir, "outside/y"},
		{"/slash/etc", noCreate, "etc"},
		{"/dangling/z", createDir, "made/by/boot/z"},
		{"/etclink/hosts", createFile, "etc/hosts"},
		{"/missing", noCreate, ""},
		{"/loop/a", createDir, ""},
	}
	for _, r := range rows {
		fd, err := inRoot(root, r.target, r.kind)
		if r.want == "" {
			if err == nil {
				unix.Close(fd)
				t.Errorf("%s: resolved, want an error", r.target)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", r.target, err)
			continue
		}
		got, err := os.Readlink(fdPath(fd))
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(root, r.want); got != want {
			t.Errorf("%s: resolved to %s, want %s", r.target, got, want)
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) > 0 {
		t.Errorf("the walk made %s outside the root", ents[0].Name())
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(root, "etc/hosts"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		t.Errorf("createFile made no regular file: %v", err)
	}
	if _, err := inRoot(root, "/missing", noCreate); !errors.Is(err, unix.ENOENT) {
		t.Errorf("a missing target without create: %v, want ENOENT", err)
	}
}
