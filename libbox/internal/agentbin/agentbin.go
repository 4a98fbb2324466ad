// Package agentbin carries the static binaries libbox runs, inside the
// host library (go:embed of the files build.sh builds into bin/),
// so users get one artifact: box-agent (PID 1 of every box) and box-netd
// (the network helper of detached boxes). It never runs them; it only
// writes them out.
package agentbin

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// bin holds what build.sh built (and a README, so the pattern always
// matches: a fresh clone builds and vets without them).
//
//go:embed bin
var bin embed.FS

var (
	binary = load("box-agent")
	netd   = load("box-netd")
)

// load returns an embedded binary, or nil when the build did not make it
// (install then says to run ./build.sh build).
func load(name string) []byte {
	b, _ := bin.ReadFile("bin/" + name)
	return b
}

// Digest is the sha256 of the embedded agent.
func Digest() string { return digest(binary) }

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Path writes the agent (once per content) into dir and returns its path.
func Path(dir string) (string, error) { return install(dir, "box-agent", binary) }

// NetdPath writes the network helper (once per content) into dir and
// returns its path.
func NetdPath(dir string) (string, error) { return install(dir, "box-netd", netd) }

func install(dir, name string, data []byte) (string, error) {
	if len(data) == 0 {
		return "", fmt.Errorf("this build has no embedded %s: build with ./build.sh build", name)
	}
	p := filepath.Join(dir, name+"-"+digest(data)[:16])
	if st, err := os.Stat(p); err == nil && st.Size() == int64(len(data)) {
		return p, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, "."+name+"-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
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
