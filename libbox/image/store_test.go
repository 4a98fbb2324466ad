package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/libbox/libbox/errdefs"
)

// TestMissingWorkingDirIsCreated: an image whose WorkingDir it does not
// hold gets it created (as Docker and podman do), also through an absolute
// directory symlink of the image (issue 20, item 2).
func TestMissingWorkingDirIsCreated(t *testing.T) {
	reg := newTestRegistry(t)
	s := openStore(t, reg.host)
	ctx := testCtx(t)
	for _, c := range []struct{ tag, wd, want string }{
		{"plain", "/srv/app", "srv/app"},
		{"through-symlink", "/var/run/app", "run/app"},
	} {
		l := tarLayer(t,
			tarEntry{name: "run/", typ: tar.TypeDir},
			tarEntry{name: "var/", typ: tar.TypeDir},
			tarEntry{name: "var/run", typ: tar.TypeSymlink, link: "/run"})
		img, err := s.Get(ctx, reg.push("test/wd", c.tag, buildImage(t, v1.Config{WorkingDir: c.wd, Cmd: []string{c.tag}}, hostArch(), l), nil), Options{})
		if err != nil {
			t.Fatalf("%s: %v", c.tag, err)
		}
		if fi, err := os.Stat(filepath.Join(img.Root, c.want)); err != nil || !fi.IsDir() {
			t.Errorf("%s: WorkingDir %s not created at %s: %v", c.tag, c.wd, c.want, err)
		}
	}
	// A WorkingDir that is a file in the image is an error, said clearly.
	l := tarLayer(t, tarEntry{name: "srv", body: "a file"})
	_, err := s.Get(ctx, reg.push("test/wd", "file", buildImage(t, v1.Config{WorkingDir: "/srv/app"}, hostArch(), l), nil), Options{})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), `working directory "/srv/app"`) {
		t.Errorf("WorkingDir under a file: %v, want InvalidArgument naming it", err)
	}
}

// TestShortImageIDs: Lookup, Get and Remove take an image ID or a unique
// prefix of it (what `box images` prints); names win over IDs.
func TestShortImageIDs(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	bb, err := s.Get(ctx, "busybox", Options{})
	if err != nil {
		t.Fatal(err)
	}
	short := strings.TrimPrefix(bb.ID, "sha256:")[:12]
	for _, id := range []string{short, "sha256:" + short, bb.ID} {
		img, err := s.Lookup(ctx, id)
		if err != nil || img.ID != bb.ID {
			t.Errorf("Lookup(%s) = %+v, %v", id, img, err)
		}
		if img, err = s.Get(ctx, id, Options{}); err != nil || img.ID != bb.ID {
			t.Errorf("Get(%s) = %+v, %v", id, img, err)
		}
	}
	if _, err := s.Lookup(ctx, "abc"); !errdefs.IsNotFound(err) {
		t.Errorf("Lookup of a 3-digit prefix = %v, want NotFound (too short to be an ID)", err)
	}
	if err := s.Remove(ctx, "0000000000", false, nil); !errdefs.IsNotFound(err) {
		t.Errorf("Remove of an unknown ID = %v, want NotFound", err)
	}
	if err := s.Remove(ctx, short, false, nil); err != nil {
		t.Fatalf("Remove(%s): %v", short, err)
	}
	if _, err := os.Stat(bb.Root); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Remove by short ID left the root: %v", err)
	}
}

// TestMovedTagIsCollected: when a pull moves a tag, the superseded image
// and its blobs are deleted, unless a box uses it; Prune collects it once
// unused (issue 20, item 9).
func TestMovedTagIsCollected(t *testing.T) {
	reg := newTestRegistry(t)
	s := openStore(t, reg.host)
	ctx := testCtx(t)
	push := func(body string) string {
		return reg.push("test/moving", "latest", buildImage(t, v1.Config{}, hostArch(), tarLayer(t, tarEntry{name: "v", body: body})), nil)
	}
	ref := push("one")
	never := func(string) bool { return false }
	v1img, err := s.Pull(ctx, ref, Options{InUse: never})
	if err != nil {
		t.Fatal(err)
	}
	push("two")
	v2img, err := s.Pull(ctx, ref, Options{InUse: never})
	if err != nil || v2img.ID == v1img.ID {
		t.Fatalf("second pull: %+v %v", v2img, err)
	}
	if _, err := os.Stat(v1img.Root); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("superseded root survived the pull: %v", err)
	}
	blobs, _ := os.ReadDir(filepath.Join(s.dir, "blobs", "sha256"))
	if len(blobs) != 2 { // config and layer of v2
		t.Errorf("%d blobs after the tag moved, want 2 (the current image's)", len(blobs))
	}

	// A box uses v2 when the tag moves again: its root stays until unused.
	push("three")
	v3img, err := s.Pull(ctx, ref, Options{InUse: func(id string) bool { return id == v2img.ID }})
	if err != nil || v3img.ID == v2img.ID {
		t.Fatalf("third pull: %+v %v", v3img, err)
	}
	if _, err := os.Stat(v2img.Root); err != nil {
		t.Errorf("a root in use was collected: %v", err)
	}
	if list, _ := s.List(ctx); len(list) != 1 || list[0].ID != v3img.ID {
		t.Errorf("List = %+v, want only the current image", list)
	}
	rep, err := s.Prune(ctx, never)
	if err != nil || rep.Roots != 1 || rep.Bytes <= 0 {
		t.Errorf("Prune = %+v, %v; want one root reclaimed", rep, err)
	}
	if _, err := os.Stat(v2img.Root); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Prune left the unused root: %v", err)
	}
	if _, err := os.Stat(v3img.Root); err != nil {
		t.Errorf("Prune deleted the current image: %v", err)
	}
	if rep, err := s.Prune(ctx, never); err != nil || rep.Roots != 0 || rep.Blobs != 0 {
		t.Errorf("second Prune = %+v, %v; want nothing left to reclaim", rep, err)
	}
}

// TestDroppedConnectionResumes: a connection dropped mid-layer is retried
// and the rest is asked for with a range request; when every retry fails
// the error is Unavailable and the next pull resumes (issue 20, item 7).
func TestDroppedConnectionResumes(t *testing.T) {
	reg := newTestRegistry(t)
	payload := make([]byte, 1<<20)
	mrand.NewChaCha8([32]byte{2}).Read(payload)
	extra := tarLayer(t, tarEntry{name: "payload", body: string(payload)})
	ref := reg.push("test/drop", "v1", buildImage(t, v1.Config{}, hostArch(), extra), nil)
	d, _ := extra.Digest()
	size, _ := extra.Size()
	setCut := func(n int) {
		reg.mu.Lock()
		reg.cut[d.String()] = n
		reg.ranges = nil
		reg.mu.Unlock()
	}
	s := openStore(t, reg.host)
	ctx := testCtx(t)

	setCut(1) // one drop: the retry resumes
	img, err := s.Get(ctx, ref, Options{})
	if err != nil {
		t.Fatalf("Get with one dropped connection: %v", err)
	}
	if mustRead(t, filepath.Join(img.Root, "payload")) != string(payload) {
		t.Error("payload damaged by the resumed download")
	}
	reg.mu.Lock()
	ranges := append([]string(nil), reg.ranges...)
	reg.mu.Unlock()
	want := fmt.Sprintf("bytes=%d-%d", size/2, size-1)
	if len(ranges) != 1 || ranges[0] != want {
		t.Errorf("range requests %q, want [%q]", ranges, want)
	}

	// Every attempt drops: Unavailable, the partial kept for the next pull.
	if err := s.Remove(ctx, ref, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.blobPath(d)); err == nil {
		t.Fatal("Remove left the blob")
	}
	setCut(downloadAttempts)
	_, err = s.Get(ctx, ref, Options{})
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "pull again to resume") {
		t.Fatalf("Get with every attempt dropped: %v, want Unavailable (ranges %q, cut %v)", err, reg.ranges, reg.cut)
	}
	if errdefs.CodeOf(err) == errdefs.Internal || strings.Contains(err.Error(), "corrupted") {
		t.Errorf("a dropped connection is reported as corruption: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.partialDir(), d.Hex)); err != nil {
		t.Errorf("no partial download kept: %v", err)
	}
	setCut(0)
	if _, err := s.Get(ctx, ref, Options{}); err != nil {
		t.Fatalf("Get after the network healed: %v", err)
	}
	reg.mu.Lock()
	ranges = append([]string(nil), reg.ranges...)
	reg.mu.Unlock()
	if len(ranges) != 1 || ranges[0] == "bytes=0-"+fmt.Sprint(size-1) {
		t.Errorf("the next pull did not resume: ranges %q", ranges)
	}
}
