package image

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"go.uber.org/goleak"

	"github.com/libbox/libbox/errdefs"
)

func TestMain(m *testing.M) {
	if ref := os.Getenv("LIBBOX_IMAGE_TEST_PULL"); ref != "" {
		os.Exit(helperPull(ref, os.Getenv("LIBBOX_IMAGE_TEST_STORE")))
	}
	goleak.VerifyTestMain(m)
}

var testConfig = v1.Config{
	Env:        []string{"PATH=/bin", "GREETING=hi"},
	WorkingDir: "/data",
	User:       "1000:1000",
	Entrypoint: []string{"/bin/sh", "-c"},
	Cmd:        []string{"echo hi"},
}

// layeredImage is busybox plus two layers exercising whiteouts, an opaque
// directory, hard links, symlinks, ownership and modes.
func layeredImage(t *testing.T, arch string) v1.Image {
	l2 := tarLayer(t,
		tarEntry{name: "data/", typ: tar.TypeDir},
		tarEntry{name: "data/a", body: "lower a"},
		tarEntry{name: "data/sub/c", body: "lower c"},
		tarEntry{name: "opt/", typ: tar.TypeDir},
		tarEntry{name: "opt/tool", body: "#!/bin/sh\necho tool\n", mode: 0o755},
		tarEntry{name: "opt/tool-link", typ: tar.TypeLink, link: "opt/tool"},
		tarEntry{name: "opt/lnk", typ: tar.TypeSymlink, link: "tool"},
		tarEntry{name: "opt/gone", body: "to be whited out"},
		tarEntry{name: "opt/suid", body: "x", mode: 0o4755},
		tarEntry{name: "etc/motd", body: "hello", mode: 0o640, uid: 1000},
		tarEntry{name: "arch", body: arch},
		tarEntry{name: "dev/null", typ: tar.TypeChar},
	)
	l3 := tarLayer(t,
		tarEntry{name: "data/", typ: tar.TypeDir},
		tarEntry{name: "data/.wh..wh..opq", body: ""},
		tarEntry{name: "data/new", body: "upper"},
		tarEntry{name: "etc/.wh.hostname"},
		tarEntry{name: "opt/.wh.gone"},
		tarEntry{name: "ro/", typ: tar.TypeDir, mode: 0o555},
		tarEntry{name: "ro/f", body: "read-only dir"},
	)
	return buildImage(t, testConfig, arch, busyboxLayer(t), l2, l3)
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mustNotExist(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s exists (err %v), want it gone", p, err)
	}
}

func checkLayeredRoot(t *testing.T, root, arch string) {
	t.Helper()
	if got := mustRead(t, filepath.Join(root, "arch")); got != arch {
		t.Errorf("arch = %q, want %q", got, arch)
	}
	// busybox from layer 1
	if fi, err := os.Lstat(filepath.Join(root, "bin/busybox")); err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		t.Errorf("bin/busybox: %v %v", fi, err)
	}
	if l, err := os.Readlink(filepath.Join(root, "bin/sh")); err != nil || l != "/bin/busybox" {
		t.Errorf("bin/sh -> %q, %v", l, err)
	}
	// opaque dir: lower entries gone, upper kept
	mustNotExist(t, filepath.Join(root, "data/a"))
	mustNotExist(t, filepath.Join(root, "data/sub"))
	if got := mustRead(t, filepath.Join(root, "data/new")); got != "upper" {
		t.Errorf("data/new = %q", got)
	}
	// whiteouts
	mustNotExist(t, filepath.Join(root, "etc/hostname"))
	mustNotExist(t, filepath.Join(root, "opt/gone"))
	mustNotExist(t, filepath.Join(root, "etc/.wh.hostname"))
	if !strings.Contains(mustRead(t, filepath.Join(root, "etc/passwd")), "box:x:1000:1000") {
		t.Error("etc/passwd lost its box user")
	}
	// hard link and symlink
	a, err1 := os.Stat(filepath.Join(root, "opt/tool"))
	b, err2 := os.Stat(filepath.Join(root, "opt/tool-link"))
	if err1 != nil || err2 != nil || !os.SameFile(a, b) {
		t.Errorf("opt/tool-link is not a hard link of opt/tool: %v %v", err1, err2)
	}
	if a != nil && (a.Mode().Perm() != 0o755 || !a.ModTime().Equal(testTime)) {
		t.Errorf("opt/tool mode %v mtime %v, want 0755 %v", a.Mode(), a.ModTime(), testTime)
	}
	if l, err := os.Readlink(filepath.Join(root, "opt/lnk")); err != nil || l != "tool" {
		t.Errorf("opt/lnk -> %q, %v", l, err)
	}
	if fi, err := os.Stat(filepath.Join(root, "opt/suid")); err != nil || fi.Mode()&fs.ModeSetuid == 0 {
		t.Errorf("opt/suid lost its setuid bit: %v %v", fi, err)
	}
	// modes of directories are applied after their content
	if fi, err := os.Stat(filepath.Join(root, "ro")); err != nil || fi.Mode().Perm() != 0o555 || !fi.ModTime().Equal(testTime) {
		t.Errorf("ro: %v %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(root, "tmp")); err != nil || fi.Mode()&fs.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("tmp is not 1777: %v %v", fi, err)
	}
	// device nodes are skipped
	mustNotExist(t, filepath.Join(root, "dev/null"))
	// ownership (kept only as root)
	if os.Geteuid() == 0 {
		fi, err := os.Stat(filepath.Join(root, "etc/motd"))
		if err != nil || fi.Sys().(*syscall.Stat_t).Uid != 1000 || fi.Mode().Perm() != 0o640 {
			t.Errorf("etc/motd: %v %v", fi, err)
		}
	}
}

func TestBuiltinBusybox(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	if _, err := s.Lookup(ctx, "busybox"); !errdefs.IsNotFound(err) {
		t.Fatalf("Lookup before install = %v, want NotFound", err)
	}
	img, err := s.Get(ctx, "busybox", Options{})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(builtinTar)
	if want := "sha256:" + hex.EncodeToString(sum[:]); img.ID != want || img.Ref != "busybox" {
		t.Errorf("got %s %s, want busybox %s", img.Ref, img.ID, want)
	}
	if img.Config.WorkingDir != "/" || len(img.Config.Cmd) != 1 || img.Config.Cmd[0] != "sh" ||
		len(img.Config.Env) != 1 || !strings.HasPrefix(img.Config.Env[0], "PATH=/usr/local/sbin:") {
		t.Errorf("config = %+v", img.Config)
	}
	if img.Size < 1<<20 || !filepath.IsAbs(img.Root) {
		t.Errorf("size %d root %q", img.Size, img.Root)
	}
	out, err := exec.CommandContext(ctx, filepath.Join(img.Root, "bin/busybox"), "echo", "alive").Output()
	if err != nil || string(out) != "alive\n" {
		t.Errorf("bin/busybox echo: %q %v", out, err)
	}
	pw := mustRead(t, filepath.Join(img.Root, "etc/passwd"))
	for _, u := range []string{"root:x:0:0:", "nobody:x:65534:65534:", "box:x:1000:1000:box:/home/box:"} {
		if !strings.Contains(pw, u) {
			t.Errorf("etc/passwd lacks %q", u)
		}
	}
	for _, d := range []string{"proc", "sys", "dev", "run", "mnt", "root", "var/tmp", "usr/bin", "usr/sbin", "sbin"} {
		if fi, err := os.Stat(filepath.Join(img.Root, d)); err != nil || !fi.IsDir() {
			t.Errorf("%s: %v", d, err)
		}
	}
	if os.Geteuid() == 0 {
		fi, _ := os.Stat(filepath.Join(img.Root, "home/box"))
		if fi == nil || fi.Sys().(*syscall.Stat_t).Uid != 1000 {
			t.Errorf("home/box not owned by box")
		}
	}
	for _, alias := range []string{"busybox:latest", "builtin:busybox"} {
		other, err := s.Get(ctx, alias, Options{})
		if err != nil || other.ID != img.ID || other.Root != img.Root {
			t.Errorf("Get(%s) = %+v, %v", alias, other, err)
		}
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 || list[0].Ref != "busybox" {
		t.Errorf("List = %+v, %v", list, err)
	}
}

func TestPullUnpacksAndCaches(t *testing.T) {
	reg := newTestRegistry(t)
	ref := reg.push("test/layered", "v1", layeredImage(t, hostArch()), nil)
	s := openStore(t, reg.host)
	ctx := testCtx(t)

	var mu sync.Mutex
	final := map[string]bool{}
	img, err := s.Get(ctx, ref, Options{Progress: func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		if p.Total >= 0 && p.Done == p.Total {
			final[p.Layer] = true
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if img.Ref != reg.host+"/test/layered:v1" {
		t.Errorf("Ref = %q", img.Ref)
	}
	checkLayeredRoot(t, img.Root, hostArch())
	if img.Config.WorkingDir != "/data" || img.Config.User != "1000:1000" || strings.Join(img.Config.Entrypoint, " ") != "/bin/sh -c" ||
		strings.Join(img.Config.Cmd, " ") != "echo hi" || strings.Join(img.Config.Env, " ") != "PATH=/bin GREETING=hi" {
		t.Errorf("config = %+v", img.Config)
	}
	mu.Lock()
	if len(final) != 3 {
		t.Errorf("progress completed for %d layers, want 3: %v", len(final), final)
	}
	mu.Unlock()
	if reg.blobs.Load() != 4 { // config + 3 layers
		t.Errorf("first pull fetched %d blobs, want 4", reg.blobs.Load())
	}

	reg.reset()
	again, err := s.Get(ctx, ref, Options{})
	if err != nil || again.ID != img.ID || again.Root != img.Root {
		t.Fatalf("second Get = %+v, %v", again, err)
	}
	if n := reg.requests.Load(); n != 0 {
		t.Errorf("second Get made %d registry requests, want 0", n)
	}
	if got, err := s.Lookup(ctx, strings.TrimPrefix(ref, "")); err != nil || got.ID != img.ID {
		t.Errorf("Lookup = %+v, %v", got, err)
	}

	reg.reset()
	pulled, err := s.Pull(ctx, ref, Options{})
	if err != nil || pulled.ID != img.ID {
		t.Fatalf("Pull = %+v, %v", pulled, err)
	}
	if reg.blobs.Load() != 0 || reg.manifests.Load() == 0 {
		t.Errorf("re-Pull: %d manifest and %d blob GETs, want >0 and 0", reg.manifests.Load(), reg.blobs.Load())
	}

	// A new tag sharing the layers downloads only what is new.
	img2 := buildImage(t, v1.Config{Cmd: []string{"true"}}, hostArch(), busyboxLayer(t), tarLayer(t, tarEntry{name: "v2", body: "2"}))
	ref2 := reg.push("test/layered", "v2", img2, nil)
	if _, err := s.Get(ctx, ref2, Options{}); err != nil {
		t.Fatal(err)
	}
	if n := reg.blobs.Load(); n != 2 { // new config + new layer; busybox layer cached
		t.Errorf("v2 pull fetched %d blobs, want 2", n)
	}
	entries, _ := os.ReadDir(s.tmpDir())
	if len(entries) != 0 {
		t.Errorf("tmp dir not empty: %v", entries)
	}
}

func TestMultiArchIndex(t *testing.T) {
	reg := newTestRegistry(t)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: layeredImage(t, otherArch()), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: otherArch()}}},
		mutate.IndexAddendum{Add: layeredImage(t, hostArch()), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: hostArch()}}},
	)
	ref := reg.push("test/multi", "latest", nil, idx)
	s := openStore(t, reg.host)
	ctx := testCtx(t)

	host, err := s.Get(ctx, reg.host+"/test/multi", Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkLayeredRoot(t, host.Root, hostArch())
	other, err := s.Get(ctx, ref, Options{Platform: "linux/" + otherArch()})
	if err != nil {
		t.Fatal(err)
	}
	if other.ID == host.ID || mustRead(t, filepath.Join(other.Root, "arch")) != otherArch() {
		t.Errorf("Platform linux/%s gave %s", otherArch(), other.ID)
	}
	_, err = s.Get(ctx, ref, Options{Platform: "linux/s390x"})
	if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "linux/s390x") {
		t.Errorf("missing platform: %v, want NotFound naming linux/s390x", err)
	}
	_, err = s.Get(ctx, ref, Options{Platform: "nonsense"})
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad platform: %v, want InvalidArgument", err)
	}
	list, _ := s.List(ctx)
	if len(list) != 2 {
		t.Errorf("List has %d images, want 2 (one per platform)", len(list))
	}
}

func TestCorruptedBlob(t *testing.T) {
	reg := newTestRegistry(t)
	extra := tarLayer(t, tarEntry{name: "payload", body: strings.Repeat("x", 4096)})
	ref := reg.push("test/corrupt", "v1", buildImage(t, v1.Config{}, hostArch(), extra), nil)
	d, _ := extra.Digest()
	reg.mu.Lock()
	reg.corrupt[d.String()] = true
	reg.mu.Unlock()

	s := openStore(t, reg.host)
	_, err := s.Get(testCtx(t), ref, Options{})
	if err == nil || !strings.Contains(err.Error(), d.String()) {
		t.Fatalf("corrupted blob: %v, want an error naming %s", err, d)
	}
	if c := errdefs.CodeOf(err); c != errdefs.Internal && c != errdefs.InvalidArgument {
		t.Errorf("class %v, want Internal or InvalidArgument", c)
	}
	if _, err := os.Stat(s.blobPath(d)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("corrupted blob entered the cache")
	}
	if list, _ := s.List(testCtx(t)); len(list) != 0 {
		t.Errorf("List = %v after a failed pull", list)
	}

	reg.mu.Lock()
	delete(reg.corrupt, d.String())
	reg.mu.Unlock()
	if _, err := s.Get(testCtx(t), ref, Options{}); err != nil {
		t.Errorf("Get after the registry healed: %v", err)
	}
}

func TestInterruptedPullLeavesNothing(t *testing.T) {
	reg := newTestRegistry(t)
	// Incompressible, so half the blob is well past the first progress event.
	payload := make([]byte, 1<<20)
	mrand.NewChaCha8([32]byte{1}).Read(payload)
	extra := tarLayer(t, tarEntry{name: "payload", body: string(payload)})
	ref := reg.push("test/stall", "v1", buildImage(t, v1.Config{}, hostArch(), extra), nil)
	d, _ := extra.Digest()
	release := make(chan struct{})
	reg.mu.Lock()
	reg.stall[d.String()] = release
	reg.mu.Unlock()

	s := openStore(t, reg.host)
	ctx, cancel := context.WithCancel(testCtx(t))
	started := make(chan struct{})
	var once sync.Once
	errc := make(chan error, 1)
	go func() {
		_, err := s.Get(ctx, ref, Options{Progress: func(p Progress) {
			if p.Layer == d.String() && p.Done > 0 {
				once.Do(func() { close(started) })
			}
		}})
		errc <- err
	}()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("download never started")
	}
	cancel()
	select {
	case err := <-errc:
		if !errdefs.IsCanceled(err) {
			t.Errorf("cancelled Get = %v, want Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("cancelled Get did not return")
	}
	close(release)
	// The flight goroutine finishes in the background; Close waits for it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries, _ := os.ReadDir(s.tmpDir())
		if len(entries) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tmp dir still holds %v", entries)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(s.blobPath(d)); !errors.Is(err, fs.ErrNotExist) {
		t.Error("half-downloaded blob entered the cache")
	}
	if _, err := s.Lookup(testCtx(t), ref); !errdefs.IsNotFound(err) {
		t.Errorf("Lookup after interrupted pull = %v, want NotFound", err)
	}
	reg.mu.Lock()
	delete(reg.stall, d.String())
	reg.mu.Unlock()
	img, err := s.Get(testCtx(t), ref, Options{})
	if err != nil || mustRead(t, filepath.Join(img.Root, "payload")) != string(payload) {
		t.Errorf("Get after interruption: %v", err)
	}
}

func TestConcurrentGetsPullOnce(t *testing.T) {
	reg := newTestRegistry(t)
	ref := reg.push("test/concurrent", "v1", layeredImage(t, hostArch()), nil)
	s := openStore(t, reg.host)
	ctx := testCtx(t)

	const n = 8
	imgs := make([]*Image, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			imgs[i], errs[i] = s.Get(ctx, ref, Options{Progress: func(Progress) {}})
		}()
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Get %d: %v", i, errs[i])
		}
		if imgs[i].ID != imgs[0].ID || imgs[i].Root != imgs[0].Root {
			t.Errorf("Get %d returned %s, Get 0 %s", i, imgs[i].ID, imgs[0].ID)
		}
	}
	if m, b := reg.manifests.Load(), reg.blobs.Load(); m != 1 || b != 4 {
		t.Errorf("%d concurrent Gets made %d manifest and %d blob GETs, want 1 and 4", n, m, b)
	}
	checkLayeredRoot(t, imgs[0].Root, hostArch())
}

func TestOCILayoutImport(t *testing.T) {
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	img := layeredImage(t, hostArch())
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{refNameAnnotation: "v1"})); err != nil {
		t.Fatal(err)
	}
	other := buildImage(t, v1.Config{Cmd: []string{"other"}}, hostArch(), busyboxLayer(t))
	if err := p.AppendImage(other, layout.WithAnnotations(map[string]string{refNameAnnotation: "v2"})); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	ctx := testCtx(t)

	got, err := s.Get(ctx, "oci-layout:"+dir+":v1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.ConfigName()
	if got.ID != want.String() || got.Ref != "oci-layout:"+dir+":v1" {
		t.Errorf("got %s %s, want %s", got.Ref, got.ID, want)
	}
	checkLayeredRoot(t, got.Root, hostArch())
	if got.Config.WorkingDir != "/data" {
		t.Errorf("config %+v", got.Config)
	}
	if _, err := s.Get(ctx, "oci-layout:"+dir+":nope", Options{}); !errdefs.IsNotFound(err) {
		t.Errorf("unknown tag: %v, want NotFound", err)
	}
	if _, err := s.Get(ctx, "oci-layout:"+dir, Options{}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("two images, no tag: %v, want InvalidArgument", err)
	}
	if _, err := s.Get(ctx, "oci-layout:"+filepath.Join(dir, "missing"), Options{}); !errdefs.IsNotFound(err) {
		t.Errorf("missing layout: %v, want NotFound", err)
	}
}

func TestDockerArchiveImport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "image.tar")
	img := layeredImage(t, hostArch())
	tag, _ := name.NewTag("example/layered:v1")
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	ctx := testCtx(t)
	got, err := s.Get(ctx, "docker-archive:"+path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.ConfigName()
	if got.ID != want.String() || got.Ref != "docker-archive:"+path {
		t.Errorf("got %s %s, want %s", got.Ref, got.ID, want)
	}
	checkLayeredRoot(t, got.Root, hostArch())
	if strings.Join(got.Config.Cmd, " ") != "echo hi" {
		t.Errorf("config %+v", got.Config)
	}
	if _, err := s.Get(ctx, "docker-archive:"+path+".missing", Options{}); !errdefs.IsNotFound(err) {
		t.Errorf("missing archive: %v, want NotFound", err)
	}
	junk := filepath.Join(t.TempDir(), "junk.tar")
	os.WriteFile(junk, []byte("not a tar"), 0o644)
	if _, err := s.Get(ctx, "docker-archive:"+junk, Options{}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("junk archive: %v, want InvalidArgument", err)
	}
}

func TestBadReferences(t *testing.T) {
	s := openStore(t)
	ctx := testCtx(t)
	for _, ref := range []string{
		"", " ", "UPPER/case", ":tag-only", "@sha256:abc", "alpine:", "a b", "alpine:bad tag",
		"alpine@sha256:short", "builtin:nope", "oci-layout:", "docker-archive:", " busybox",
	} {
		t.Run(ref, func(t *testing.T) {
			for _, op := range []func() error{
				func() error { _, err := s.Get(ctx, ref, Options{}); return err },
				func() error { _, err := s.Pull(ctx, ref, Options{}); return err },
				func() error { _, err := s.Lookup(ctx, ref); return err },
				func() error { return s.Remove(ctx, ref, false, nil) },
			} {
				err := op()
				if !errdefs.IsInvalidArgument(err) {
					t.Fatalf("%q: %v, want InvalidArgument", ref, err)
				}
				if !strings.Contains(err.Error(), `"`+ref+`"`) {
					t.Errorf("message %q does not quote the reference", err)
				}
			}
		})
	}
}

func TestNormalizedReferences(t *testing.T) {
	for in, want := range map[string]string{
		"alpine":                        "docker.io/library/alpine:latest",
		"alpine:3.20":                   "docker.io/library/alpine:3.20",
		"docker.io/library/alpine:3.20": "docker.io/library/alpine:3.20",
		"index.docker.io/foo/bar":       "docker.io/foo/bar:latest",
		"ghcr.io/o/r@sha256:" + strings.Repeat("a", 64): "ghcr.io/o/r@sha256:" + strings.Repeat("a", 64),
		"busybox":                     "busybox",
		"busybox:latest":              "busybox",
		"builtin:busybox":             "busybox",
		"docker.io/library/busybox":   "docker.io/library/busybox:latest",
		"localhost:5000/x/y:1":        "localhost:5000/x/y:1",
		"oci-layout:/some/dir":        "oci-layout:/some/dir",
		"oci-layout:/some/dir:tag":    "oci-layout:/some/dir:tag",
		"docker-archive:/x/image.tar": "docker-archive:/x/image.tar",
	} {
		pr, err := parseRef(in, nil)
		if err != nil || pr.norm != want {
			t.Errorf("parseRef(%q) = %q, %v; want %q", in, pr.norm, err, want)
		}
	}
}

func TestUnknownImage(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push("test/known", "v1", buildImage(t, v1.Config{}, hostArch(), busyboxLayer(t)), nil)
	s := openStore(t, reg.host)
	ctx := testCtx(t)
	for _, ref := range []string{reg.host + "/test/missing:v1", reg.host + "/test/known:nope"} {
		_, err := s.Get(ctx, ref, Options{})
		if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), ref) {
			t.Errorf("Get(%s) = %v, want NotFound naming it", ref, err)
		}
	}
}

func TestRegistryDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := l.Addr().String()
	l.Close() // nothing listens there now
	for _, listed := range []bool{true, false} {
		var s *Store
		if listed {
			s = openStore(t, host)
		} else {
			s = openStore(t)
		}
		_, err = s.Get(testCtx(t), host+"/x/y:1", Options{})
		if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "registry "+host+" is unreachable") {
			t.Errorf("Get from a dead registry (insecure-listed %v) = %v, want Unavailable naming %s", listed, err, host)
		}
	}
}

func TestPlainHTTPNeedsListing(t *testing.T) {
	reg := newTestRegistry(t)
	ref := reg.push("test/plain", "v1", buildImage(t, v1.Config{}, hostArch(), busyboxLayer(t)), nil)
	s := openStore(t) // registry not listed as insecure
	_, err := s.Get(testCtx(t), ref, Options{})
	if err == nil || !strings.Contains(err.Error(), "LIBBOX_INSECURE_REGISTRIES") {
		t.Errorf("plain-HTTP registry not listed: %v, want an error pointing to LIBBOX_INSECURE_REGISTRIES", err)
	}
	if reg.blobs.Load() != 0 || reg.manifests.Load() != 0 {
		t.Errorf("the unlisted registry was spoken to over plain HTTP")
	}
}

func TestMirror(t *testing.T) {
	origin := newTestRegistry(t)
	mirror := newTestRegistry(t)
	img := buildImage(t, v1.Config{}, hostArch(), busyboxLayer(t))
	ref := origin.push("test/mirrored", "v1", img, nil)
	mirror.push("test/mirrored", "v1", img, nil)
	t.Setenv("LIBBOX_INSECURE_REGISTRIES", origin.host+","+mirror.host)
	t.Setenv("LIBBOX_REGISTRY_MIRRORS", origin.host+"="+mirror.host)
	s, err := openEnv(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Get(testCtx(t), ref, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Ref != origin.host+"/test/mirrored:v1" {
		t.Errorf("Ref = %s, want the origin's name", got.Ref)
	}
	if origin.requests.Load() != 0 || mirror.blobs.Load() == 0 {
		t.Errorf("origin got %d requests, mirror %d blob GETs; want 0 and >0", origin.requests.Load(), mirror.blobs.Load())
	}
	// A mirror lacking the image falls back to the origin.
	ref2 := origin.push("test/only-origin", "v1", buildImage(t, v1.Config{Cmd: []string{"2"}}, hostArch(), busyboxLayer(t)), nil)
	if _, err := s.Get(testCtx(t), ref2, Options{}); err != nil {
		t.Errorf("fallback to origin: %v", err)
	}
}

func TestRegistryEnvErrors(t *testing.T) {
	for _, c := range []struct{ env, val string }{
		{"LIBBOX_REGISTRY_AUTH", "ghcr.io=nopassword"},
		{"LIBBOX_REGISTRY_AUTH", "=u:p"},
		{"LIBBOX_REGISTRY_MIRRORS", "docker.io"},
	} {
		t.Setenv("LIBBOX_REGISTRY_AUTH", "")
		t.Setenv("LIBBOX_REGISTRY_MIRRORS", "")
		t.Setenv(c.env, c.val)
		if s, err := openEnv(t.TempDir()); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), c.env) {
			t.Errorf("%s=%s: %v, want InvalidArgument naming %s", c.env, c.val, err, c.env)
			if s != nil {
				s.Close()
			}
		}
	}
	t.Setenv("LIBBOX_REGISTRY_MIRRORS", "")
	t.Setenv("LIBBOX_REGISTRY_AUTH", "docker.io=alice:s3cr:et,ghcr.io=bob:pw")
	cfg, err := registryConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.auth[name.DefaultRegistry]; a.Username != "alice" || a.Password != "s3cr:et" {
		t.Errorf("docker.io auth = %+v", a)
	}
}

func TestRemoveAndList(t *testing.T) {
	reg := newTestRegistry(t)
	ref := reg.push("test/rm", "v1", layeredImage(t, hostArch()), nil)
	reg.push("test/rm", "alias", layeredImage(t, hostArch()), nil)
	s := openStore(t, reg.host)
	ctx := testCtx(t)

	bb, err := s.Get(ctx, "busybox", Options{})
	if err != nil {
		t.Fatal(err)
	}
	img, err := s.Get(ctx, ref, Options{})
	if err != nil {
		t.Fatal(err)
	}
	alias, err := s.Get(ctx, reg.host+"/test/rm:alias", Options{})
	if err != nil || alias.ID != img.ID {
		t.Fatalf("alias: %+v %v", alias, err)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 3 {
		t.Fatalf("List = %+v, %v; want 3 images", list, err)
	}

	if err := s.Remove(ctx, reg.host+"/test/nope:v1", false, nil); !errdefs.IsNotFound(err) {
		t.Errorf("Remove unknown = %v, want NotFound", err)
	}
	inUse := func(id string) bool { return id == img.ID }
	// Another name still refers to the image: removing one name is fine.
	if err := s.Remove(ctx, reg.host+"/test/rm:alias", false, inUse); err != nil {
		t.Errorf("Remove of a second name: %v", err)
	}
	if err := s.Remove(ctx, ref, false, inUse); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Remove in use = %v, want FailedPrecondition", err)
	}
	if _, err := s.Lookup(ctx, ref); err != nil {
		t.Errorf("refused Remove dropped the image: %v", err)
	}
	if err := s.Remove(ctx, ref, true, inUse); err != nil {
		t.Errorf("forced Remove: %v", err)
	}
	if _, err := s.Lookup(ctx, ref); !errdefs.IsNotFound(err) {
		t.Errorf("Lookup after forced Remove = %v, want NotFound", err)
	}
	if _, err := os.Stat(img.Root); err != nil {
		t.Errorf("forced Remove deleted a root in use: %v", err)
	}
	// Once unused, the next Remove collects the root and its blobs.
	if err := s.Remove(ctx, "busybox", false, func(string) bool { return false }); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{img.Root, bb.Root} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s survived collection", p)
		}
	}
	if blobs, _ := os.ReadDir(filepath.Join(s.dir, "blobs", "sha256")); len(blobs) != 0 {
		t.Errorf("%d blobs survived collection", len(blobs))
	}
	if list, _ := s.List(ctx); len(list) != 0 {
		t.Errorf("List = %+v, want empty", list)
	}
	// And everything can come back.
	if _, err := s.Get(ctx, ref, Options{}); err != nil {
		t.Errorf("Get after Remove: %v", err)
	}
}

func TestClosedStore(t *testing.T) {
	s := openStore(t)
	s.Close()
	if _, err := s.Get(testCtx(t), "busybox", Options{}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Get on a closed store = %v, want FailedPrecondition", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestIndexSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := openEnv(dir)
	if err != nil {
		t.Fatal(err)
	}
	img, err := s.Get(testCtx(t), "busybox", Options{})
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "tmp", "root-stale"), 0o755) // an interrupted pull of a dead process
	s2, err := openEnv(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.Lookup(testCtx(t), "busybox")
	if err != nil || got.ID != img.ID || !got.Created.Equal(img.Created) {
		t.Errorf("after reopen: %+v, %v", got, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(entries) != 0 {
		t.Errorf("Open left stale work: %v", entries)
	}
}
