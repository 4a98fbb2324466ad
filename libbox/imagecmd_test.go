package libbox_test

import (
	"archive/tar"
	"bytes"
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/libbox/libbox/libbox"
)

// greetImage writes an OCI layout holding busybox plus a greet script, with
// Entrypoint ["greet"], Cmd ["world"] and a WorkingDir the image lacks.
func greetImage(t *testing.T) string {
	t.Helper()
	bb, err := tarball.LayerFromFile(filepath.Join("image", "builtin", "busybox.tar.gz"))
	if err != nil {
		t.Fatalf("builtin busybox layer (run ./build.sh build): %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	script := "#!/bin/sh\necho \"greet $*\"\n"
	tw.WriteHeader(&tar.Header{Name: "usr/local/bin/greet", Mode: 0o755, Size: int64(len(script)), Typeflag: tar.TypeReg})
	tw.Write([]byte(script))
	tw.Close()
	b := buf.Bytes()
	greet, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, bb, greet)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config = v1.Config{
		Env:        []string{"PATH=/usr/local/bin:/bin"},
		Entrypoint: []string{"greet"}, Cmd: []string{"world"}, WorkingDir: "/work/dir",
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestImageCommand: Command.UseImageCmd runs the image's Entrypoint and
// Cmd as `docker run IMAGE [ARG...]` does, the image's missing WorkingDir
// exists, and a box can be made from a short image ID (issue 20, items 1
// and 2).
func TestImageCommand(t *testing.T) {
	requireSandbox(t)
	rt := openRT(t, "")
	ref := "oci-layout:" + greetImage(t)
	b := startBox(t, rt, libbox.BoxOptions{Image: ref})
	ctx := ctxT(t, 60*time.Second)
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "greet world"},
		{[]string{"a", "b"}, "greet a b"},
	} {
		r, err := b.Run(ctx, libbox.Command{UseImageCmd: true, Args: c.args})
		if err != nil || r.ExitCode != 0 || strings.TrimSpace(string(r.Stdout)) != c.want {
			t.Errorf("image command with args %q: %q %q %v, want %q", c.args, r.Stdout, r.Stderr, err, c.want)
		}
	}
	if got := strings.TrimSpace(sh(t, b, "pwd")); got != "/work/dir" {
		t.Errorf("pwd = %q, want the image's WorkingDir /work/dir", got)
	}

	// busybox has a Cmd (sh) but no Entrypoint: args replace the Cmd.
	bb := startBox(t, rt, libbox.BoxOptions{})
	r, err := bb.Run(ctx, libbox.Command{UseImageCmd: true, Args: []string{"echo", "replaced"}})
	if err != nil || strings.TrimSpace(string(r.Stdout)) != "replaced" {
		t.Errorf("busybox with args: %q %v", r.Stdout, err)
	}

	imgs, err := rt.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var id string
	for _, im := range imgs {
		if im.Ref == ref {
			id = im.ID
		}
	}
	short := strings.TrimPrefix(id, "sha256:")[:12]
	sb, err := rt.Create(ctx, libbox.BoxOptions{Image: short, Isolation: libbox.IsolationSandbox, AutoRemove: true})
	if err != nil || sb.Info().ImageID != id {
		t.Fatalf("create from short image ID %s: %v", short, err)
	}
	rt.Remove(ctx, sb.ID(), true)
}
