// Package agentbin carries the static binaries libbox runs, inside the
// host library (go:embed of the files build.sh builds into bin/),
// so users get one artifact: box-agent (PID 1 of every box) and box-netd
// (the network helper of detached boxes). It never runs them; it only
// writes them out.
//
// The binaries stay in the library's read-only data: nothing copies them
// into the heap (which would add their size to every process that loads
// libbox, and to every copy the host forks of itself). They are streamed
// once to hash them and once to write them out.
package agentbin

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// bin holds what build.sh built (and a README, so the pattern always
// matches: a fresh clone builds and vets without them).
//
//go:embed bin
var bin embed.FS

// blob is one embedded binary; its digest is computed on first use.
type blob struct {
	name string
	once sync.Once
	sum  string
	size int64
	err  error
}

func (b *blob) digest() (string, int64, error) {
	b.once.Do(func() { b.sum, b.size, b.err = hashEmbedded(b.name) })
	return b.sum, b.size, b.err
}

var (
	agent = &blob{name: "box-agent"}
	netd  = &blob{name: "box-netd"}
)

// hashEmbedded returns the sha256 and size of bin/name, or an error when
// the build did not make it (install then says to run ./build.sh build).
func hashEmbedded(name string) (string, int64, error) {
	f, err := bin.Open("bin/" + name)
	if err != nil {
		return "", 0, fmt.Errorf("this build has no embedded %s: build with ./build.sh build", name)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	if n == 0 {
		return "", 0, fmt.Errorf("this build has an empty embedded %s: build with ./build.sh build", name)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// Path writes the agent (once per content) into dir and returns its path.
func Path(dir string) (string, error) { return agent.install(dir) }

// NetdPath writes the network helper (once per content) into dir and
// returns its path.
func NetdPath(dir string) (string, error) { return netd.install(dir) }

func (b *blob) install(dir string) (string, error) {
	sum, size, err := b.digest()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, b.name+"-"+sum[:16])
	if st, err := os.Stat(p); err == nil && st.Size() == size {
		return p, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	src, err := bin.Open("bin/" + b.name)
	if err != nil {
		return "", err
	}
	defer src.Close()
	tmp, err := os.CreateTemp(dir, "."+b.name+"-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return p, os.Rename(tmp.Name(), p)
}
