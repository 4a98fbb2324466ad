//go:build linux

package qemu

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestPunchZeroPages: the zero pages of a template's RAM file become holes
// and its content reads the same.
func TestPunchZeroPages(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ram")
	data := make([]byte, 2048*4096) // 8 MiB, past one read buffer
	for _, pg := range []int{0, 7, 300, 2047} {
		data[pg*4096+5] = byte(pg) | 1
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	before := allocated(p)
	if err := punchZeroPages(p); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("content changed (%v)", err)
	}
	if after := allocated(p); after >= before || after > 64*4096 {
		t.Fatalf("allocated %d bytes before, %d after: want at most the 4 data pages' blocks", before, after)
	}
}
