package hostid

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestAlloc(t *testing.T) {
	tmp := t.TempDir()
	old := Table
	Table = filepath.Join(tmp, "table", "userns.json")
	t.Cleanup(func() { Table = old })
	dirs := []string{filepath.Join(tmp, "a"), filepath.Join(tmp, "b"), filepath.Join(tmp, "c")}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]Slice{}
	seen := map[uint32]bool{}
	for _, d := range dirs {
		s, desc, err := Alloc(d)
		if err != nil {
			t.Fatal(err)
		}
		if seen[s.UID] {
			t.Fatalf("%s got a slice already in use: %+v", d, s)
		}
		if s.UID == 0 || s.GID == 0 || desc == "" {
			t.Fatalf("bad slice %+v %q", s, desc)
		}
		seen[s.UID] = true
		got[d] = s
	}
	// A box keeps its slice across starts, and a restart does not rewrite
	// the table (a rewrite renames a new file over it).
	before, err := os.Stat(Table)
	if err != nil {
		t.Fatal(err)
	}
	if s, _, _ := Alloc(dirs[1]); s != got[dirs[1]] {
		t.Fatalf("restart: %+v, want %+v", s, got[dirs[1]])
	}
	if after, err := os.Stat(Table); err != nil || !os.SameFile(before, after) {
		t.Errorf("a restart rewrote the table (%v)", err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(Table), ".*")); len(left) > 0 {
		t.Errorf("temp files left beside the table: %v", left)
	}
	// A removed box's slice is taken by the next new box.
	if err := os.Remove(dirs[0]); err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(tmp, "d")
	os.Mkdir(d, 0o700)
	if s, _, _ := Alloc(d); s != got[dirs[0]] {
		t.Fatalf("reuse: %+v, want the freed %+v", s, got[dirs[0]])
	}
	if s, _, _ := Alloc(dirs[2]); s != got[dirs[2]] {
		t.Fatalf("slices moved: %+v, want %+v", s, got[dirs[2]])
	}
	// Churn: boxes come and go; the table holds no more entries than
	// boxes lived at once, and the new boxes take the lowest slices.
	for round := 0; round < 3; round++ {
		var made []string
		for i := 0; i < 8; i++ {
			d := filepath.Join(tmp, fmt.Sprintf("churn-%d-%d", round, i))
			os.Mkdir(d, 0o700)
			s, _, err := Alloc(d)
			if err != nil {
				t.Fatal(err)
			}
			if s.Index > 10 {
				t.Fatalf("round %d box %d got slice %d: freed slices were not reused", round, i, s.Index)
			}
			made = append(made, d)
		}
		for _, d := range made {
			os.Remove(d)
		}
	}
	b, err := os.ReadFile(Table)
	if err != nil {
		t.Fatal(err)
	}
	var table map[string]string
	if err := json.Unmarshal(b, &table); err != nil {
		t.Fatal(err)
	}
	if len(table) > 11 {
		t.Fatalf("table grew to %d entries for at most 11 boxes at once", len(table))
	}
}
