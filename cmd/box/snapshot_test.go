package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestSnapshotCLI: snapshot create/ls/rm, run --from, restore, export and
// the exported layout run again, on sandbox boxes.
func TestSnapshotCLI(t *testing.T) {
	requireRoot(t)
	home := t.TempDir()
	ok := func(args ...string) string {
		t.Helper()
		r := box(t, home, "", args...)
		if r.code != 0 {
			t.Fatalf("box %v: %+v", args, r)
		}
		return r.out
	}
	ok("run", "-d", "--name", "src", "--isolation", "sandbox", "busybox")
	ok("exec", "src", "sh", "-c", "echo v1 > /root/f")
	if got := ok("snapshot", "create", "src", "v1"); got != "v1\n" {
		t.Fatalf("snapshot create printed %q", got)
	}
	if r := box(t, home, "", "snapshot", "create", "src", "v1"); r.code != 125 || !strings.Contains(r.err, "already exists") {
		t.Fatalf("duplicate snapshot: %+v", r)
	}
	// A clone: no IMAGE operand, the isolation of its source.
	if got := ok("run", "--rm", "--from", "v1", "cat", "/root/f"); got != "v1\n" {
		t.Fatalf("run --from printed %q", got)
	}
	ok("run", "-d", "--name", "twin", "--from", "v1")
	var list []map[string]any
	if err := json.Unmarshal([]byte(ok("snapshot", "ls", "--json")), &list); err != nil || len(list) != 1 || list[0]["name"] != "v1" || list[0]["isolation"] != "sandbox" {
		t.Fatalf("snapshot ls --json: %v %v", err, list)
	}
	if out := ok("snapshot", "ls"); !strings.Contains(out, "box twin") {
		t.Fatalf("snapshot ls does not say twin uses v1:\n%s", out)
	}
	if r := box(t, home, "", "snapshot", "rm", "v1"); r.code != 125 || !strings.Contains(r.err, "in use") {
		t.Fatalf("snapshot rm in use: %+v", r)
	}
	// Restore a stopped box.
	ok("exec", "src", "sh", "-c", "echo v2 > /root/f")
	if r := box(t, home, "", "restore", "src", "v1"); r.code != 125 || !strings.Contains(r.err, "stop it") {
		t.Fatalf("restore of a running box: %+v", r)
	}
	ok("stop", "src")
	ok("restore", "src", "v1")
	ok("start", "src")
	if got := ok("exec", "src", "cat", "/root/f"); got != "v1\n" {
		t.Fatalf("after restore: %q", got)
	}
	// Export the clone, run the layout.
	ok("exec", "twin", "sh", "-c", "echo twin > /root/g")
	dir := filepath.Join(t.TempDir(), "img")
	if got := ok("export", "twin", dir); got != "oci-layout:"+dir+"\n" {
		t.Fatalf("export printed %q", got)
	}
	if got := ok("run", "--rm", "--isolation", "sandbox", "oci-layout:"+dir, "cat", "/root/f", "/root/g"); got != "v1\ntwin\n" {
		t.Fatalf("the exported image reads %q", got)
	}
	ok("rm", "-f", "src", "twin")
	ok("snapshot", "rm", "v1")
	if r := box(t, home, "", "snapshot", "rm", "v1"); r.code != 125 || !strings.Contains(r.err, "no snapshot") {
		t.Fatalf("snapshot rm twice: %+v", r)
	}
}
