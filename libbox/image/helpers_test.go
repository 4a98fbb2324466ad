package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// testRegistry is an in-process registry that counts what it serves and
// can corrupt or stall chosen blobs.
type testRegistry struct {
	t    *testing.T
	srv  *httptest.Server
	host string

	requests  atomic.Int64 // every request
	manifests atomic.Int64 // GET /v2/.../manifests/...
	blobs     atomic.Int64 // GET /v2/.../blobs/...

	mu sync.Mutex
	// corrupt and stall name blobs (by digest) to damage or hold; guarded by mu.
	corrupt map[string]bool
	stall   map[string]chan struct{}
	// cut names blobs whose next responses (a count) stop halfway and
	// drop the connection; ranges records the Range headers of blob GETs.
	cut    map[string]int
	ranges []string
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{t: t, corrupt: map[string]bool{}, stall: map[string]chan struct{}{}, cut: map[string]int{}}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.requests.Add(1)
		p := req.URL.Path
		isGet := req.Method == http.MethodGet
		if isGet && strings.Contains(p, "/manifests/") {
			r.manifests.Add(1)
		}
		if isGet && strings.Contains(p, "/blobs/sha256:") {
			r.blobs.Add(1)
			digest := p[strings.LastIndex(p, "/")+1:]
			r.mu.Lock()
			bad, stall, cut := r.corrupt[digest], r.stall[digest], r.cut[digest] > 0
			if cut {
				r.cut[digest]--
			}
			if rg := req.Header.Get("Range"); rg != "" {
				r.ranges = append(r.ranges, rg)
			}
			r.mu.Unlock()
			if cut {
				rec := httptest.NewRecorder()
				inner.ServeHTTP(rec, req)
				body := rec.Body.Bytes()
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.Header().Set("Content-Length", fmt.Sprint(len(body)))
				w.WriteHeader(rec.Code)
				w.Write(body[:len(body)/2])
				return // short of Content-Length: the server drops the connection
			}
			if bad || stall != nil {
				rec := httptest.NewRecorder()
				inner.ServeHTTP(rec, req)
				body := rec.Body.Bytes()
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.Code)
				if bad && len(body) > 0 {
					body = append([]byte(nil), body...)
					body[len(body)/2] ^= 0xff
				}
				if stall != nil {
					w.Write(body[:len(body)/2])
					w.(http.Flusher).Flush()
					select {
					case <-stall:
					case <-req.Context().Done():
					}
					return
				}
				w.Write(body)
				return
			}
		}
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	r.host = strings.TrimPrefix(r.srv.URL, "http://")
	return r
}

// push uploads img or idx under repo:tag (not counted) and returns the
// reference to pull.
func (r *testRegistry) push(repo, tag string, img v1.Image, idx v1.ImageIndex) string {
	r.t.Helper()
	ref, err := name.ParseReference(r.host + "/" + repo + ":" + tag)
	if err != nil {
		r.t.Fatal(err)
	}
	pushImage(r.t, ref, img, idx, http.DefaultTransport.(*http.Transport).Clone())
	r.reset()
	return ref.String()
}

// pushImage uploads img (or idx) to ref over tr (closed after), with opts.
func pushImage(t *testing.T, ref name.Reference, img v1.Image, idx v1.ImageIndex, tr *http.Transport, opts ...remote.Option) {
	t.Helper()
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts = append(opts, remote.WithTransport(tr), remote.WithContext(ctx))
	var err error
	if idx != nil {
		err = remote.WriteIndex(ref, idx, opts...)
	} else {
		err = remote.Write(ref, img, opts...)
	}
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

func (r *testRegistry) reset() {
	r.requests.Store(0)
	r.manifests.Store(0)
	r.blobs.Store(0)
}

// tarEntry describes one entry of a test layer.
type tarEntry struct {
	name string
	typ  byte
	body string
	link string
	mode int64
	uid  int
}

func tarBytes(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Linkname: e.link, Mode: mode, Uid: e.uid, Gid: e.uid,
			ModTime: testTime, Size: int64(len(e.body))}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var testTime = time.Date(2023, 5, 6, 7, 8, 9, 0, time.UTC)

func layerOf(t *testing.T, b []byte) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func tarLayer(t *testing.T, entries ...tarEntry) v1.Layer { return layerOf(t, tarBytes(t, entries...)) }

func busyboxLayer(t *testing.T) v1.Layer { return layerOf(t, builtinTar) }

func buildImage(t *testing.T, cfg v1.Config, arch string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config = cfg
	cf.OS, cf.Architecture = "linux", arch
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

func hostArch() string { return runtime.GOARCH }

func otherArch() string {
	if runtime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// openStore opens a store in a temp dir, trusting the given plain-HTTP
// registries, and closes it at cleanup.
func openStore(t *testing.T, insecure ...string) *Store {
	t.Helper()
	return openStoreAuth(t, "", insecure...)
}

// openStoreAuth is openStore with LIBBOX_REGISTRY_AUTH set to auth.
func openStoreAuth(t *testing.T, auth string, insecure ...string) *Store {
	t.Helper()
	t.Setenv("LIBBOX_INSECURE_REGISTRIES", strings.Join(insecure, ","))
	t.Setenv("LIBBOX_REGISTRY_MIRRORS", "")
	t.Setenv("LIBBOX_REGISTRY_AUTH", auth)
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no credentials of the machine
	dir := t.TempDir()
	// Images may hold read-only directories, which stop a non-root owner
	// from deleting their entries: open them up before TempDir's cleanup.
	t.Cleanup(func() {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o700)
			}
			return nil
		})
	})
	s, err := openEnv(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
