// Package agentbin carries the static box-agent binary inside the host
// library (go:embed of the file build.sh builds next to this one), so users
// get one artifact. It never runs the agent; it only writes it out.
package agentbin

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

//go:embed box-agent
var binary []byte

// Digest is the sha256 of the embedded agent.
func Digest() string {
	sum := sha256.Sum256(binary)
	return hex.EncodeToString(sum[:])
}

// Path writes the agent (once per content) into dir and returns its path.
func Path(dir string) (string, error) {
	if len(binary) == 0 {
		return "", fmt.Errorf("this build has no embedded box-agent: build with ./build.sh build")
	}
	p := filepath.Join(dir, "box-agent-"+Digest()[:16])
	if st, err := os.Stat(p); err == nil && st.Size() == int64(len(binary)) {
		return p, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".box-agent-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(binary); err != nil {
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
