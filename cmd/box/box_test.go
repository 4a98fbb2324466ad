package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var boxBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "box-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	boxBin = filepath.Join(dir, "box")
	if out, err := exec.Command("go", "build", "-o", boxBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build box: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	out, err string
	code     int
}

// box runs the CLI with a home and optional stdin, under a deadline.
func box(t *testing.T, home string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, boxBin, args...)
	cmd.Env = append(os.Environ(), "LIBBOX_HOME="+home)
	cmd.Stdin = strings.NewReader(stdin)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("box %v hung", args)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{so.String(), se.String(), code}
}

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the CLI tests use sandbox boxes: run as root (CI does)")
	}
}

func TestRunExitCodes(t *testing.T) {
	requireRoot(t)
	home := t.TempDir()
	cases := []struct {
		args []string
		code int
		out  string
		err  string
	}{
		{[]string{"sh", "-c", "echo out; echo err >&2; exit 3"}, 3, "out\n", "err\n"},
		{[]string{"sh", "-c", "kill -9 $$"}, 137, "", ""},
		{[]string{"no-such-command"}, 127, "", "not found"},
		{[]string{"/etc/passwd"}, 126, "", "not executable"},
		{[]string{"true"}, 0, "", ""},
	}
	for _, c := range cases {
		r := box(t, home, "", append([]string{"run", "--rm", "--isolation", "sandbox", "busybox"}, c.args...)...)
		if r.code != c.code || r.out != c.out || !strings.Contains(r.err, c.err) {
			t.Errorf("run %v: code %d out %q err %q; want %d %q %q", c.args, r.code, r.out, r.err, c.code, c.out, c.err)
		}
	}
	if r := box(t, home, "", "ls", "-a", "--json"); strings.TrimSpace(r.out) != "[]" {
		t.Errorf("--rm left boxes: %s", r.out)
	}
}

func TestLibboxErrors(t *testing.T) {
	home := t.TempDir()
	cases := [][]string{
		{"run", "--isolation", "docker", "busybox", "true"},
		{"frobnicate"},
		{"exec", "nosuch", "true"},
		{"start", "nosuch"},
		{"cp", "a", "b"},
		{"run", "--bogus-flag", "busybox"},
		{"pull", "UPPER/case"},
	}
	for _, args := range cases {
		r := box(t, home, "", args...)
		lines := strings.Split(strings.TrimSpace(r.err), "\n")
		if r.code != 125 || len(lines) != 1 || !strings.HasPrefix(lines[0], "box: ") {
			t.Errorf("box %v: code %d stderr %q; want 125 and one line", args, r.code, r.err)
		}
	}
}

func TestStdin(t *testing.T) {
	requireRoot(t)
	home := t.TempDir()
	r := box(t, home, "line one\nline two\n", "run", "--rm", "-i", "--isolation", "sandbox", "busybox", "sh", "-c", "wc -l; echo done")
	if r.code != 0 || r.out != "2\ndone\n" {
		t.Fatalf("stdin: %d %q %q", r.code, r.out, r.err)
	}
}

func TestLifecycleCopyInspect(t *testing.T) {
	requireRoot(t)
	home := t.TempDir()
	r := box(t, home, "", "create", "--name", "dev", "--isolation", "sandbox", "-e", "GREETING=hello", "busybox")
	if r.code != 0 || len(strings.TrimSpace(r.out)) != 16 {
		t.Fatalf("create: %+v", r)
	}
	if r := box(t, home, "", "exec", "dev", "true"); r.code != 125 || !strings.Contains(r.err, "start it") {
		t.Fatalf("exec on created box: %+v", r)
	}
	if r := box(t, home, "", "start", "dev"); r.code != 0 {
		t.Fatalf("start: %+v", r)
	}
	// The box outlives each CLI process.
	if r := box(t, home, "", "exec", "-e", "X=1", "dev", "sh", "-c", "echo $GREETING $X > /root/f"); r.code != 0 {
		t.Fatalf("exec: %+v", r)
	}
	if r := box(t, home, "", "exec", "dev", "cat", "/root/f"); r.out != "hello 1\n" {
		t.Fatalf("exec after exec: %+v", r)
	}
	var list []map[string]any
	r = box(t, home, "", "ls", "--json")
	if err := json.Unmarshal([]byte(r.out), &list); err != nil || len(list) != 1 || list[0]["name"] != "dev" || list[0]["state"] != "running" {
		t.Fatalf("ls --json: %v %s", err, r.out)
	}
	var info map[string]any
	r = box(t, home, "", "inspect", "dev")
	if err := json.Unmarshal([]byte(r.out), &info); err != nil || info["isolation"] != "sandbox" {
		t.Fatalf("inspect: %v %s", err, r.out)
	}
	// cp both ways.
	src := filepath.Join(t.TempDir(), "in.txt")
	os.WriteFile(src, []byte("from host\n"), 0o644)
	if r := box(t, home, "", "cp", src, "dev:/data/in.txt"); r.code != 0 {
		t.Fatalf("cp in: %+v", r)
	}
	if r := box(t, home, "", "exec", "dev", "cat", "/data/in.txt"); r.out != "from host\n" {
		t.Fatalf("after cp in: %+v", r)
	}
	dst := filepath.Join(t.TempDir(), "out.txt")
	if r := box(t, home, "", "cp", "dev:/root/f", dst); r.code != 0 {
		t.Fatalf("cp out: %+v", r)
	}
	if b, _ := os.ReadFile(dst); string(b) != "hello 1\n" {
		t.Fatalf("cp out content %q", b)
	}
	// Images: in use, so rmi is refused.
	if r := box(t, home, "", "images"); !strings.Contains(r.out, "busybox") {
		t.Fatalf("images: %+v", r)
	}
	if r := box(t, home, "", "rmi", "busybox"); r.code != 125 || !strings.Contains(r.err, "busybox") {
		t.Fatalf("rmi in use: %+v", r)
	}
	if r := box(t, home, "", "pull", "busybox"); r.code != 0 || !strings.Contains(r.out, "sha256:") {
		t.Fatalf("pull: %+v", r)
	}
	if r := box(t, home, "", "stop", "dev"); r.code != 0 {
		t.Fatalf("stop: %+v", r)
	}
	if r := box(t, home, "", "ls"); strings.Contains(r.out, "dev") {
		t.Fatalf("stopped box in ls: %s", r.out)
	}
	if r := box(t, home, "", "rm", "dev"); r.code != 0 {
		t.Fatalf("rm: %+v", r)
	}
	if r := box(t, home, "", "ls", "-a"); strings.Contains(r.out, "dev") {
		t.Fatalf("removed box in ls -a: %s", r.out)
	}
	if r := box(t, home, "", "version"); r.code != 0 || !strings.HasPrefix(r.out, "box ") {
		t.Fatalf("version: %+v", r)
	}
}

// TestTTY runs `box run -t` on a pseudo-terminal, as a shell would.
func TestTTY(t *testing.T) {
	requireRoot(t)
	home := t.TempDir()
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no /dev/ptmx: %v", err)
	}
	master := os.NewFile(uintptr(mfd), "ptmx")
	defer master.Close()
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(mfd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	unix.IoctlSetWinsize(mfd, unix.TIOCSWINSZ, &unix.Winsize{Row: 31, Col: 97})
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, boxBin, "run", "--rm", "-i", "-t", "--isolation", "sandbox", "busybox", "sh", "-c", "stty size; tty; read x; echo got $x")
	cmd.Env = append(os.Environ(), "LIBBOX_HOME="+home)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var out bytes.Buffer
	readDone := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				close(readDone)
				return
			}
		}
	}()
	time.Sleep(1500 * time.Millisecond) // let the box start; input is buffered either way
	master.Write([]byte("typed\r"))
	err = cmd.Wait()
	<-readDone
	text := strings.ReplaceAll(out.String(), "\r", "")
	if err != nil || !strings.Contains(text, "31 97\n") || !strings.Contains(text, "/dev/pts/") || !strings.Contains(text, "got typed") {
		t.Fatalf("tty run: %v, output %q", err, text)
	}
}
