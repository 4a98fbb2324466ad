package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/libbox/libbox/errdefs"
)

// These tests run the CNCF distribution registry (Debian's docker-registry,
// installed by ./build.sh deps) with generated configurations: plain HTTP,
// htpasswd authentication, and TLS with a self-signed certificate made here.

const registryBin = "/usr/bin/docker-registry"

func requiresRegistry(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(registryBin); err != nil {
		t.Skipf("no %s: install Debian's docker-registry (./build.sh deps does)", registryBin)
	}
}

// realRegistry is one docker-registry process and its storage.
type realRegistry struct {
	t      *testing.T
	dir    string // config and storage
	addr   string // ip:port it listens on
	host   string // how clients name it: host:port
	tls    bool
	user   string // htpasswd user, "" without auth
	pass   string
	caPool *x509.CertPool

	mu sync.Mutex
	// cmd is the running process (nil once killed); guarded by mu.
	cmd *exec.Cmd
}

type realOpts struct {
	host string // name clients use (default 127.0.0.1); the registry listens on its address
	tls  bool
	auth bool
}

func startRealRegistry(t *testing.T, o realOpts) *realRegistry {
	t.Helper()
	requiresRegistry(t)
	if o.host == "" {
		o.host = "127.0.0.1"
	}
	ips, err := net.LookupHost(o.host)
	if err != nil || len(ips) == 0 {
		t.Fatalf("resolve %s: %v", o.host, err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	r := &realRegistry{t: t, dir: t.TempDir(), addr: addr, host: net.JoinHostPort(o.host, port), tls: o.tls}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(r.dir, "data"), addr)
	if o.tls {
		cert, key := r.selfSigned(o.host)
		cfg += fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", cert, key)
	}
	if o.auth {
		r.user, r.pass = "tester", "s3cret-Pa55word"
		out, err := exec.Command("htpasswd", "-Bbn", r.user, r.pass).Output()
		if err != nil {
			t.Skipf("htpasswd: %v: install Debian's apache2-utils (./build.sh deps does)", err)
		}
		hp := filepath.Join(r.dir, "htpasswd")
		if err := os.WriteFile(hp, out, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: libbox-test\n    path: %s\n", hp)
	}
	if err := os.WriteFile(filepath.Join(r.dir, "config.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	r.start()
	t.Cleanup(r.kill)
	return r
}

// selfSigned writes a certificate for host (and 127.0.0.1) and its key.
func (r *realRegistry) selfSigned(host string) (certPath, keyPath string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		r.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{host},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		r.t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		r.t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(r.dir, "cert.pem"), filepath.Join(r.dir, "key.pem")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	c, _ := x509.ParseCertificate(der)
	r.caPool = x509.NewCertPool()
	r.caPool.AddCert(c)
	return certPath, keyPath
}

// start runs the registry and waits until it answers.
func (r *realRegistry) start() {
	r.t.Helper()
	cmd := exec.Command(registryBin, "serve", filepath.Join(r.dir, "config.yml"))
	var logBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.cmd = cmd
	r.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", r.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			r.kill()
			r.t.Fatalf("docker-registry did not listen on %s: %s", r.addr, logBuf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill stops the registry at once (SIGKILL) and reaps it. Idempotent.
func (r *realRegistry) kill() {
	r.mu.Lock()
	cmd := r.cmd
	r.cmd = nil
	r.mu.Unlock()
	if cmd != nil {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// push uploads img (or idx) as repo:tag, over addr (the registry itself
// when ""), and returns the reference clients pull (through host).
func (r *realRegistry) push(repo, tag string, img v1.Image, idx v1.ImageIndex) string {
	r.t.Helper()
	ref, err := name.ParseReference(r.addr+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		r.t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if r.tls {
		tr.TLSClientConfig = &tls.Config{RootCAs: r.caPool}
		ref, _ = name.ParseReference(r.addr + "/" + repo + ":" + tag)
	}
	var opts []remote.Option
	if r.user != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: r.user, Password: r.pass}))
	}
	pushImage(r.t, ref, img, idx, tr, opts...)
	return r.host + "/" + repo + ":" + tag
}

// proxy is a TCP relay in front of a registry that records the requests
// it relays, can hold the responses of one blob, and can kill the registry
// once a response has relayed a given number of bytes.
type proxy struct {
	t    *testing.T
	ln   net.Listener
	host string
	wg   sync.WaitGroup

	blobGets   atomic.Int64 // GETs of watched
	manifestGs atomic.Int64 // GETs of manifests
	relayed    atomic.Int64 // response bytes relayed for watched blob GETs

	mu sync.Mutex
	// target is the registry's address; the others configure the relay.
	// All guarded by mu.
	target  string
	watched string // blob digest
	ranges  []string
	killAt  int64  // kill the registry after this many bytes of watched (0: never)
	onKill  func() // kills the registry
	holdFor int64  // hold watched GETs until this many manifest GETs arrived
	conns   map[net.Conn]bool
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, host: ln.Addr().String(), target: target, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *proxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.relay(c)
		}()
	}
}

// relay forwards one client connection; it reads requests to learn which
// responses carry the watched blob (one request at a time per connection,
// as HTTP/1.1 clients without pipelining send them).
func (p *proxy) relay(c net.Conn) {
	p.track(c, true)
	defer p.track(c, false)
	defer c.Close()
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	s, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	p.track(s, true)
	defer p.track(s, false)
	defer s.Close()
	var watching atomic.Bool
	done := make(chan struct{})
	go func() { // responses
		defer close(done)
		defer c.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := s.Read(buf)
			if n > 0 {
				if watching.Load() && p.count(int64(n)) {
					return
				}
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			req := string(buf[:n])
			watching.Store(p.inspect(req))
			if _, werr := s.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	s.Close()
	<-done
}

// inspect notes a request and says whether its response is the watched
// blob; it holds a watched GET while fewer manifests than holdFor came.
func (p *proxy) inspect(req string) bool {
	line, _, _ := strings.Cut(req, "\r\n")
	if strings.HasPrefix(line, "GET ") && strings.Contains(line, "/manifests/") {
		p.manifestGs.Add(1)
	}
	p.mu.Lock()
	watched, hold := p.watched, p.holdFor
	p.mu.Unlock()
	if watched == "" || !strings.HasPrefix(line, "GET ") || !strings.Contains(line, "/blobs/"+watched) {
		return false
	}
	p.blobGets.Add(1)
	for _, h := range strings.Split(req, "\r\n") {
		if k, v, ok := strings.Cut(h, ":"); ok && strings.EqualFold(k, "Range") {
			p.mu.Lock()
			p.ranges = append(p.ranges, strings.TrimSpace(v))
			p.mu.Unlock()
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for p.manifestGs.Load() < hold && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// count adds n relayed bytes of the watched blob; past killAt it kills the
// registry and reports true (the relay then drops the connection).
func (p *proxy) count(n int64) bool {
	total := p.relayed.Add(n)
	p.mu.Lock()
	killAt, kill := p.killAt, p.onKill
	if killAt > 0 && total >= killAt {
		p.killAt = 0
	}
	p.mu.Unlock()
	if killAt > 0 && total >= killAt {
		kill()
		return true
	}
	return false
}

func (p *proxy) watch(digest string) {
	p.mu.Lock()
	p.watched = digest
	p.ranges = nil
	p.mu.Unlock()
	p.blobGets.Store(0)
	p.manifestGs.Store(0)
	p.relayed.Store(0)
}

// randomLayer is a layer of size incompressible bytes in one file.
func randomLayer(t *testing.T, size int, seed byte) (v1.Layer, []byte) {
	payload := make([]byte, size)
	mrand.NewChaCha8([32]byte{seed}).Read(payload)
	return tarLayer(t, tarEntry{name: "payload", body: string(payload)}), payload
}

// helperPull is the body of one pulling process (see TestMain): it pulls
// ref into the store at dir and prints the image ID.
func helperPull(ref, dir string) int {
	s, err := openEnv(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	img, err := s.Pull(ctx, ref, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(img.ID)
	return 0
}

// edgeCaseImage has the layer edge cases of issue 20: an opaque marker
// after the layer's own files (item 3), writes through the absolute
// directory symlink var/run -> /run (item 4) and a WorkingDir the image
// lacks (item 2).
func edgeCaseImage(t *testing.T, arch string) v1.Image {
	lower := tarLayer(t,
		tarEntry{name: "run/", typ: tar.TypeDir},
		tarEntry{name: "var/", typ: tar.TypeDir},
		tarEntry{name: "var/run", typ: tar.TypeSymlink, link: "/run"},
		tarEntry{name: "d/lower", body: "lower"},
		tarEntry{name: "d/sub/lower", body: "lower"},
		tarEntry{name: "arch", body: arch},
	)
	upper := tarLayer(t,
		tarEntry{name: "d/own", body: "own"},
		tarEntry{name: "d/sub/own", body: "own"},
		tarEntry{name: "d/.wh..wh..opq"},
		tarEntry{name: "var/run/app.pid", body: "42"},
	)
	return buildImage(t, v1.Config{WorkingDir: "/srv/app", Entrypoint: []string{"/bin/echo"}, Cmd: []string{"hi"}},
		arch, busyboxLayer(t), lower, upper)
}

func checkEdgeCaseRoot(t *testing.T, root string) {
	t.Helper()
	for p, want := range map[string]string{"d/own": "own", "d/sub/own": "own", "run/app.pid": "42"} {
		if got := mustRead(t, filepath.Join(root, p)); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	mustNotExist(t, filepath.Join(root, "d/lower"))
	mustNotExist(t, filepath.Join(root, "d/sub/lower"))
	if fi, err := os.Stat(filepath.Join(root, "srv/app")); err != nil || !fi.IsDir() {
		t.Errorf("WorkingDir /srv/app not created: %v", err)
	}
}

// TestRealRegistryPlainHTTP pulls a multi-arch image from the real registry
// over plain HTTP: layer edge cases, the platform choice, and the
// collection of the image a moved tag superseded.
func TestRealRegistryPlainHTTP(t *testing.T) {
	reg := startRealRegistry(t, realOpts{})
	host, other := edgeCaseImage(t, hostArch()), edgeCaseImage(t, otherArch())
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: host, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: hostArch()}}},
		mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: otherArch()}}})
	ref := reg.push("test/edge", "v1", nil, idx)
	s := openStore(t, reg.host)
	ctx := testCtx(t)

	img, err := s.Get(ctx, ref, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkEdgeCaseRoot(t, img.Root)
	if got := mustRead(t, filepath.Join(img.Root, "arch")); got != hostArch() {
		t.Errorf("default platform gave %s, want the host's %s", got, hostArch())
	}
	if img.Config.WorkingDir != "/srv/app" || strings.Join(img.Config.Entrypoint, " ") != "/bin/echo" {
		t.Errorf("config = %+v", img.Config)
	}
	oimg, err := s.Get(ctx, ref, Options{Platform: "linux/" + otherArch()})
	if err != nil || mustRead(t, filepath.Join(oimg.Root, "arch")) != otherArch() {
		t.Fatalf("platform linux/%s: %+v %v", otherArch(), oimg, err)
	}
	_, err = s.Get(ctx, ref, Options{Platform: "linux/s390x"})
	if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "pass a platform it has") || !strings.Contains(err.Error(), "linux/"+otherArch()) {
		t.Errorf("missing platform: %v, want NotFound listing the platforms", err)
	}

	// The tag moves: the superseded image goes with the pull that moved it.
	reg.push("test/edge", "v1", buildImage(t, v1.Config{}, hostArch(), tarLayer(t, tarEntry{name: "v2", body: "2"})), nil)
	never := func(string) bool { return false }
	img2, err := s.Pull(ctx, ref, Options{InUse: never})
	if err != nil || img2.ID == img.ID {
		t.Fatalf("pull of the moved tag: %+v %v", img2, err)
	}
	mustNotExist(t, img.Root)
	if _, err := os.Stat(oimg.Root); err != nil {
		t.Errorf("the other platform's image (still referenced) was collected: %v", err)
	}
}

// TestRealRegistryTransportErrors: each failure to reach a registry says
// what happened (issue 20, item 6).
func TestRealRegistryTransportErrors(t *testing.T) {
	ctx := testCtx(t)
	t.Run("self-signed HTTPS at 127.0.0.1", func(t *testing.T) {
		reg := startRealRegistry(t, realOpts{tls: true})
		ref := reg.push("test/tls", "v1", buildImage(t, v1.Config{}, hostArch(), tarLayer(t, tarEntry{name: "f", body: "x"})), nil)
		_, err := openStore(t).Get(ctx, ref, Options{})
		if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "TLS certificate this machine does not trust") ||
			strings.Contains(err.Error(), "plain HTTP") {
			t.Errorf("self-signed registry: %v, want Unavailable naming the untrusted certificate", err)
		}
		if _, err := openStore(t, reg.host).Get(ctx, ref, Options{}); err != nil {
			t.Errorf("self-signed registry listed in LIBBOX_INSECURE_REGISTRIES: %v", err)
		}
	})
	t.Run("plain HTTP by host name", func(t *testing.T) {
		name := loopbackName(t)
		reg := startRealRegistry(t, realOpts{host: name})
		ref := reg.push("test/plain", "v1", buildImage(t, v1.Config{}, hostArch(), tarLayer(t, tarEntry{name: "f", body: "x"})), nil)
		_, err := openStore(t).Get(ctx, ref, Options{})
		if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "speaks plain HTTP") || strings.Contains(err.Error(), "unreachable") {
			t.Errorf("plain-HTTP registry %s: %v, want Unavailable saying it speaks plain HTTP", reg.host, err)
		}
		if _, err := openStore(t, reg.host).Get(ctx, ref, Options{}); err != nil {
			t.Errorf("plain-HTTP registry listed in LIBBOX_INSECURE_REGISTRIES: %v", err)
		}
	})
	t.Run("nobody listening", func(t *testing.T) {
		reg := startRealRegistry(t, realOpts{})
		reg.kill()
		_, err := openStore(t, reg.host).Get(ctx, reg.host+"/test/none:v1", Options{})
		if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "unreachable") {
			t.Errorf("registry down: %v, want Unavailable saying unreachable", err)
		}
	})
}

// loopbackName finds a host name (not localhost, which clients treat as
// plain HTTP anyway) that resolves to a loopback address.
func loopbackName(t *testing.T) string {
	t.Helper()
	var names []string
	if h, err := os.Hostname(); err == nil {
		names = append(names, h)
	}
	b, _ := os.ReadFile("/etc/hosts")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(f[0], "127.") {
			names = append(names, f[1:]...)
		}
	}
	for _, n := range names {
		if n == "localhost" || strings.HasPrefix(n, "localhost") || strings.HasPrefix(n, "#") || strings.HasSuffix(n, ".local") {
			continue
		}
		if ips, err := net.LookupHost(n); err == nil && len(ips) > 0 && net.ParseIP(ips[0]).IsLoopback() && net.ParseIP(ips[0]).To4() != nil {
			return n
		}
	}
	t.Skip("no host name resolves to a loopback address: add one to /etc/hosts (127.0.1.1 NAME)")
	return ""
}

// TestRealRegistryAuth: with htpasswd authentication, a missing login, a
// wrong password and a missing image each get their own message, and no
// message holds the password.
func TestRealRegistryAuth(t *testing.T) {
	reg := startRealRegistry(t, realOpts{auth: true})
	ref := reg.push("test/private", "v1", buildImage(t, v1.Config{}, hostArch(), tarLayer(t, tarEntry{name: "f", body: "x"})), nil)
	ctx := testCtx(t)
	check := func(what, auth, ref string, ok func(error) bool, want string) {
		t.Helper()
		_, err := openStoreAuth(t, auth, reg.host).Get(ctx, ref, Options{})
		if !ok(err) || !strings.Contains(fmt.Sprint(err), want) {
			t.Errorf("%s: %v, want %q", what, err, want)
		}
		if err != nil && (strings.Contains(err.Error(), reg.pass) || strings.Contains(err.Error(), "wrong-pass")) {
			t.Errorf("%s: the message holds a password: %v", what, err)
		}
	}
	check("no credentials", "", ref, errdefs.IsNotFound, "refused anonymous access")
	check("wrong password", reg.host+"="+reg.user+":wrong-pass", ref, errdefs.IsFailedPrecondition,
		`rejected the credentials of user "tester" (from LIBBOX_REGISTRY_AUTH)`)
	check("missing image", reg.host+"="+reg.user+":"+reg.pass, reg.host+"/test/absent:v1", errdefs.IsNotFound, "not found in registry")
	check("right password", reg.host+"="+reg.user+":"+reg.pass, ref, func(err error) bool { return err == nil }, "<nil>")
}

// TestRealRegistryKillMidPull kills the registry while a layer streams:
// the pull fails as Unavailable (not as corruption) after bounded retries,
// keeps what it got, and once the registry is back the next pull asks only
// for the rest (HTTP range request) (issue 20, item 7).
func TestRealRegistryKillMidPull(t *testing.T) {
	reg := startRealRegistry(t, realOpts{})
	const size = 8 << 20
	layer, payload := randomLayer(t, size, 7)
	reg.push("test/big", "v1", buildImage(t, v1.Config{}, hostArch(), layer), nil)
	px := startProxy(t, reg.addr)
	ref := px.host + "/test/big:v1"
	d, _ := layer.Digest()
	blobSize, _ := layer.Size()
	px.watch(d.String())
	px.mu.Lock()
	px.killAt, px.onKill = 3<<20, reg.kill
	px.mu.Unlock()
	s := openStore(t, px.host)
	ctx := testCtx(t)

	_, err := s.Get(ctx, ref, Options{})
	if !errdefs.IsUnavailable(err) || strings.Contains(err.Error(), "corrupted") {
		t.Fatalf("pull from a killed registry: %v, want Unavailable", err)
	}
	fi, err := os.Stat(filepath.Join(s.partialDir(), d.Hex))
	if err != nil || fi.Size() < 1<<20 {
		t.Fatalf("partial download kept: %v %v", fi, err)
	}
	kept := fi.Size()

	reg.start()
	px.watch(d.String())
	img, err := s.Get(ctx, ref, Options{})
	if err != nil {
		t.Fatalf("pull after the registry came back: %v", err)
	}
	if mustRead(t, filepath.Join(img.Root, "payload")) != string(payload) {
		t.Error("resumed layer is damaged")
	}
	px.mu.Lock()
	ranges := px.ranges
	px.mu.Unlock()
	want := fmt.Sprintf("bytes=%d-%d", kept, blobSize-1)
	if len(ranges) != 1 || ranges[0] != want {
		t.Errorf("range requests %q, want [%q]", ranges, want)
	}
	if got := px.relayed.Load(); got >= blobSize {
		t.Errorf("the resumed pull moved %d bytes, the whole layer is %d", got, blobSize)
	}
	if _, err := os.Stat(filepath.Join(s.partialDir(), d.Hex)); err == nil {
		t.Error("partial file left after the blob was stored")
	}
}

// TestRealRegistryConcurrentProcesses: 8 processes pulling one image into
// one store download its layer once (the per-blob lock of the store).
func TestRealRegistryConcurrentProcesses(t *testing.T) {
	reg := startRealRegistry(t, realOpts{})
	layer, _ := randomLayer(t, 4<<20, 9)
	reg.push("test/shared", "v1", buildImage(t, v1.Config{}, hostArch(), busyboxLayer(t), layer), nil)
	px := startProxy(t, reg.addr)
	ref := px.host + "/test/shared:v1"
	d, _ := layer.Digest()
	const procs = 8
	px.watch(d.String())
	px.mu.Lock()
	px.holdFor = procs // every process has resolved the image before the layer flows
	px.mu.Unlock()
	dir := t.TempDir()
	t.Cleanup(func() { removeTree(dir) })

	type result struct {
		out string
		err error
	}
	results := make(chan result, procs)
	for i := 0; i < procs; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "LIBBOX_IMAGE_TEST_PULL="+ref, "LIBBOX_IMAGE_TEST_STORE="+dir,
			"LIBBOX_INSECURE_REGISTRIES="+px.host, "LIBBOX_REGISTRY_AUTH=", "LIBBOX_REGISTRY_MIRRORS=", "DOCKER_CONFIG="+t.TempDir())
		go func() {
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				err = fmt.Errorf("%v: %s", err, stderr.String())
			}
			results <- result{strings.TrimSpace(string(out)), err}
		}()
	}
	ids := map[string]int{}
	for i := 0; i < procs; i++ {
		r := <-results
		if r.err != nil {
			t.Errorf("pulling process: %v", r.err)
			continue
		}
		ids[r.out]++
	}
	if len(ids) != 1 {
		t.Errorf("processes got image IDs %v, want one", ids)
	}
	if got := px.manifestGs.Load(); got < procs {
		t.Errorf("%d manifest requests: the processes did not overlap", got)
	}
	if got := px.blobGets.Load(); got != 1 {
		t.Errorf("the layer was downloaded %d times by %d processes, want once", got, procs)
	}
	roots, _ := os.ReadDir(filepath.Join(dir, "roots"))
	if len(roots) != 1 {
		t.Errorf("%d roots, want 1", len(roots))
	}
}
