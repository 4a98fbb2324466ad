package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestFSStatsPs: box fs, box stats, box ps and box kill on a sandbox box;
// ps sees an exec another box process runs.
func TestFSStatsPs(t *testing.T) {
	requireRoot(t)
	home := t.TempDir()
	if r := box(t, home, "", "create", "--name", "f", "--isolation", "sandbox", "busybox"); r.code != 0 {
		t.Fatalf("create: %+v", r)
	}
	defer box(t, home, "", "rm", "-f", "f")
	if r := box(t, home, "", "start", "f"); r.code != 0 {
		t.Fatalf("start: %+v", r)
	}
	if r := box(t, home, "hello\xff\n", "fs", "write", "--mode", "0600", "f", "/tmp/d/a.txt"); r.code != 0 {
		t.Fatalf("fs write: %+v", r)
	}
	if r := box(t, home, "more\n", "fs", "write", "--append", "f", "/tmp/d/a.txt"); r.code != 0 {
		t.Fatalf("fs write --append: %+v", r)
	}
	if r := box(t, home, "", "fs", "cat", "f", "/tmp/d/a.txt"); r.code != 0 || r.out != "hello\xff\nmore\n" {
		t.Fatalf("fs cat: %+v", r)
	}
	if r := box(t, home, "", "fs", "cat", "--offset", "1", "--length", "4", "f", "/tmp/d/a.txt"); r.out != "ello" {
		t.Fatalf("fs cat range: %+v", r)
	}
	if r := box(t, home, "", "fs", "mkdir", "-p", "f", "/tmp/d/e/g"); r.code != 0 {
		t.Fatalf("fs mkdir: %+v", r)
	}
	if r := box(t, home, "", "fs", "mv", "f", "/tmp/d/a.txt", "/tmp/d/e/b.txt"); r.code != 0 {
		t.Fatalf("fs mv: %+v", r)
	}
	var list []map[string]any
	r := box(t, home, "", "fs", "ls", "-d", "3", "--json", "f", "/tmp/d")
	if err := json.Unmarshal([]byte(r.out), &list); err != nil || len(list) != 3 || list[1]["path"] != "/tmp/d/e/b.txt" || list[1]["mode"] != float64(0o600) {
		t.Fatalf("fs ls --json: %v %+v", err, r)
	}
	if r := box(t, home, "", "fs", "stat", "f", "/tmp/d/e/b.txt"); !strings.Contains(r.out, "file") || !strings.Contains(r.out, "0600") {
		t.Fatalf("fs stat: %+v", r)
	}
	if r := box(t, home, "", "fs", "rm", "f", "/tmp/d"); r.code != 125 || !strings.Contains(r.err, "not empty") {
		t.Fatalf("fs rm non-empty: %+v", r)
	}
	if r := box(t, home, "", "fs", "rm", "-r", "f", "/tmp/d"); r.code != 0 {
		t.Fatalf("fs rm -r: %+v", r)
	}
	if r := box(t, home, "", "fs", "cat", "f", "/tmp/d/e/b.txt"); r.code != 125 || !strings.Contains(r.err, "no such file") {
		t.Fatalf("fs cat missing: %+v", r)
	}
	if r := box(t, home, "", "fs", "cat", "f", "/tmp/../etc/passwd"); r.code != 125 || !strings.Contains(r.err, "..") {
		t.Fatalf("fs cat with ..: %+v", r)
	}
	var st map[string]any
	r = box(t, home, "", "stats", "--json", "f")
	if err := json.Unmarshal([]byte(r.out), &st); err != nil || st["memory_total"].(float64) <= 0 || st["host_rss"].(float64) <= 0 {
		t.Fatalf("stats --json: %v %+v", err, r)
	}
	if r := box(t, home, "", "stats", "--no-stream", "f"); !strings.Contains(r.out, "MEM USAGE / LIMIT") {
		t.Fatalf("stats --no-stream: %+v", r)
	}
	// An exec another CLI process runs, seen by ps and killed by pid.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	other := exec.CommandContext(ctx, boxBin, "exec", "f", "sleep", "321")
	other.Env = append(os.Environ(), "LIBBOX_HOME="+home)
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	pid := ""
	for i := 0; i < 200 && pid == ""; i++ {
		var ps []map[string]any
		r := box(t, home, "", "ps", "--json", "f")
		_ = json.Unmarshal([]byte(r.out), &ps)
		for _, p := range ps {
			if args, _ := json.Marshal(p["args"]); string(args) == `["sleep","321"]` {
				pid = strings.TrimSuffix(strings.TrimSpace(string(must(json.Marshal(p["pid"])))), ".0")
			}
		}
		if pid == "" {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if pid == "" {
		t.Fatal("ps never showed the other process's exec")
	}
	if r := box(t, home, "", "ps", "f"); !strings.Contains(r.out, "sleep 321") {
		t.Fatalf("ps table: %+v", r)
	}
	if r := box(t, home, "", "kill", "-s", "TERM", "f", pid); r.code != 0 {
		t.Fatalf("kill: %+v", r)
	}
	err := other.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 128+15 {
		t.Fatalf("the killed exec's CLI exited with %v, want status 143", err)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
