package sandbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/libbox/libbox/libbox"
	"github.com/libbox/libbox/libbox/sandbox"
)

// attackEnv is what the attack rows run against: two boxes of one
// runtime, the static probe mounted read-only at /probe in the first one,
// and a volume holding symlinks that point at host paths.
type attackEnv struct {
	rt        *libbox.Runtime
	box, peer *libbox.Box
	small     *libbox.Box // with a memory limit
	home      string
	secret    string // a host file no box may read
	vol       string // host dir of the volume at /vol
}

type probeResult struct {
	Attack string `json:"attack"`
	Errno  string `json:"errno"`
	Data   string `json:"data"`
}

// probe runs the probe in the box with one attack and returns its result.
func (e *attackEnv) probe(t *testing.T, attack string) probeResult {
	t.Helper()
	pr, r, err := e.runProbe(attack)
	if err == nil && r.ExitCode != 0 {
		err = fmt.Errorf("exit %d stderr %q", r.ExitCode, r.Stderr)
	}
	if err != nil {
		t.Fatalf("probe %s: %v", attack, err)
	}
	return pr
}

// runProbe may be called from any goroutine.
func (e *attackEnv) runProbe(attack string) (probeResult, libbox.Result, error) {
	return runProbe(e.box, attack)
}

func runProbe(b *libbox.Box, attack string) (probeResult, libbox.Result, error) {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var pr probeResult
	r, err := b.Run(c, libbox.Command{Args: []string{"/probe/probe", attack}})
	if err == nil && r.ExitCode == 0 {
		if err := json.Unmarshal(r.Stdout, &pr); err != nil {
			return pr, r, fmt.Errorf("probe output %q: %v", r.Stdout, err)
		}
	}
	return pr, r, err
}

// limitHow is what the box's Info says enforces limit name.
func limitHow(b *libbox.Box, name string) string {
	l, _ := b.Info().Backend["limits"].(map[string]string)
	how := l[name]
	if _, after, ok := strings.Cut(how, ": "); ok {
		how = after
	}
	return strings.Join(strings.Fields(hostPathRE.ReplaceAllString(how, "")), " ")
}

func (e *attackEnv) sh(t *testing.T, script string) libbox.Result {
	t.Helper()
	r, err := e.box.Run(ctx(t, 60*time.Second), libbox.Command{Args: []string{"sh", "-c", script}})
	if err != nil {
		t.Fatalf("sh -c %q: %v", script, err)
	}
	return r
}

func ctx(t *testing.T, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c
}

// failsWith: the attack failed with one of errnos (the outcome's text).
func failsWith(pr probeResult, errnos ...string) (string, error) {
	for _, e := range errnos {
		if pr.Errno == e {
			return "denied (" + e + ")", nil
		}
	}
	if pr.Errno == "" {
		return "", fmt.Errorf("%s succeeded (read %s)", pr.Attack, pr.Data)
	}
	return "", fmt.Errorf("%s failed with %s, want one of %v", pr.Attack, pr.Errno, errnos)
}

// readsNothing: the path is masked (empty) or absent.
func readsNothing(pr probeResult) (string, error) {
	switch {
	case pr.Errno == "ENOENT":
		return "absent (ENOENT)", nil
	case pr.Errno != "":
		return "denied (" + pr.Errno + ")", nil
	case pr.Data == "":
		return "masked (reads empty)", nil
	}
	return "", fmt.Errorf("%s read %s", pr.Attack, pr.Data)
}

func hostFile(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

const attackMemMiB = 64

var (
	threadsRE  = regexp.MustCompile(`have \d+ already`)
	hostPathRE = regexp.MustCompile(`/[^ ;]*`) // host paths differ between machines
)

// attackRow is one line of the attack table in docs/security.md.
type attackRow struct {
	name string
	run  func(t *testing.T, e *attackEnv) (string, error)
}

var attackRows = []attackRow{
	{"write `kernel.core_pattern`", func(t *testing.T, e *attackEnv) (string, error) {
		before := hostFile(t, "/proc/sys/kernel/core_pattern")
		out, err := failsWith(e.probe(t, "write=/proc/sys/kernel/core_pattern"), "EROFS", "EACCES")
		if after := hostFile(t, "/proc/sys/kernel/core_pattern"); after != before {
			return "", fmt.Errorf("host core_pattern changed: %q -> %q", before, after)
		}
		return out, err
	}},
	{"write any `/proc/sys` file", func(t *testing.T, e *attackEnv) (string, error) {
		// Opens every sysctl for writing and writes nothing.
		r := e.sh(t, `n=0; w=0; for f in $(find /proc/sys -type f); do n=$((n+1)); if ( : >"$f" ) 2>/dev/null; then echo "$f"; w=$((w+1)); fi; done; echo "$n files, $w writable" >&2`)
		if len(bytes.TrimSpace(r.Stdout)) != 0 {
			return "", fmt.Errorf("writable sysctls: %s", r.Stdout)
		}
		return "denied (EROFS): " + strings.TrimSpace(string(r.Stderr)), nil
	}},
	{"write `/proc/sysrq-trigger`", func(t *testing.T, e *attackEnv) (string, error) {
		return failsWith(e.probe(t, "write=/proc/sysrq-trigger"), "EROFS", "EACCES", "ENOENT")
	}},
	{"read `/proc/kcore`", func(t *testing.T, e *attackEnv) (string, error) { return readsNothing(e.probe(t, "read=/proc/kcore")) }},
	{"read `/proc/keys`", func(t *testing.T, e *attackEnv) (string, error) { return readsNothing(e.probe(t, "read=/proc/keys")) }},
	{"read `/sys/firmware`", func(t *testing.T, e *attackEnv) (string, error) {
		return readsNothing(e.probe(t, "read=/sys/firmware"))
	}},
	{"`keyctl`, `add_key`", func(t *testing.T, e *attackEnv) (string, error) {
		if out, err := failsWith(e.probe(t, "keyctl"), "EPERM"); err != nil {
			return out, err
		}
		return failsWith(e.probe(t, "add_key"), "EPERM")
	}},
	{"`bpf` (create a map)", func(t *testing.T, e *attackEnv) (string, error) { return failsWith(e.probe(t, "bpf"), "EPERM") }},
	{"`perf_event_open`", func(t *testing.T, e *attackEnv) (string, error) {
		return failsWith(e.probe(t, "perf_event_open"), "EPERM")
	}},
	{"load a module", func(t *testing.T, e *attackEnv) (string, error) { return failsWith(e.probe(t, "init_module"), "EPERM") }},
	{"`mount` a tmpfs", func(t *testing.T, e *attackEnv) (string, error) { return failsWith(e.probe(t, "mount"), "EPERM") }},
	{"`unshare -U` / `-m` / `-n`, `clone(CLONE_NEWUSER)`", func(t *testing.T, e *attackEnv) (string, error) {
		for _, f := range []string{"-U", "-m", "-n"} {
			r := e.sh(t, "unshare "+f+" true")
			if r.ExitCode == 0 || !strings.Contains(string(r.Stderr), "Operation not permitted") {
				return "", fmt.Errorf("unshare %s: exit %d %q", f, r.ExitCode, r.Stderr)
			}
		}
		return failsWith(e.probe(t, "clone=user"), "EPERM")
	}},
	{"`ptrace` attach to PID 1 (the agent)", func(t *testing.T, e *attackEnv) (string, error) {
		return failsWith(e.probe(t, "ptrace=1"), "EPERM")
	}},
	{"change the hostname or the clock", func(t *testing.T, e *attackEnv) (string, error) {
		host, _ := os.Hostname()
		out, err := failsWith(e.probe(t, "sethostname=pwned"), "EPERM")
		if err != nil {
			return out, err
		}
		if h, _ := os.Hostname(); h != host {
			return "", fmt.Errorf("host hostname changed to %q", h)
		}
		return failsWith(e.probe(t, "settimeofday"), "EPERM")
	}},
	{"fork bomb (threads: quicker to make, counted alike)", func(t *testing.T, e *attackEnv) (string, error) {
		type res struct {
			pr  probeResult
			err error
		}
		done := make(chan res, 1)
		go func() {
			pr, r, err := e.runProbe("threadbomb")
			if err == nil && !bytes.Contains(r.Stderr, []byte("errno=11")) {
				err = fmt.Errorf("exit %d %.300q", r.ExitCode, r.Stderr)
			}
			pr.Data = string(threadsRE.Find(r.Stderr))
			done <- res{pr, err}
		}()
		hostForks := 0
		for {
			select {
			case r := <-done:
				if r.err != nil {
					return "", r.err
				}
				if err := exec.Command("true").Run(); err != nil || hostForks == 0 {
					return "", fmt.Errorf("the host did not fork during and after the bomb (%d, %v)", hostForks, err)
				}
				if rr := e.sh(t, "echo alive"); string(rr.Stdout) != "alive\n" {
					return "", fmt.Errorf("box unusable after the bomb: %q", rr.Stdout)
				}
				t.Logf("bomb: %s, %d host forks meanwhile", r.pr.Data, hostForks)
				return fmt.Sprintf("contained: EAGAIN at the pids limit %d (%s); the host kept forking, the box lives on", sandbox.DefaultPidsLimit, limitHow(e.box, "pids")), nil
			case <-time.After(100 * time.Millisecond):
				if err := exec.Command("true").Run(); err != nil {
					return "", fmt.Errorf("the host cannot fork during the bomb: %v", err)
				}
				hostForks++
			}
		}
	}},
	{"allocate past the memory limit", func(t *testing.T, e *attackEnv) (string, error) {
		_, r, err := runProbe(e.small, fmt.Sprintf("alloc=%d", 4*attackMemMiB))
		if err != nil {
			return "", err
		}
		how := limitHow(e.small, "memory")
		if r.ExitCode == 0 && strings.HasPrefix(how, "not enforced") && os.Geteuid() != 0 {
			return "NOT CONTAINED: " + how + " (the box may use all the host's memory)", nil
		}
		if r.Signal != int(syscall.SIGKILL) {
			return "", fmt.Errorf("allocating %d MiB in a %d MiB box: exit %d signal %d", 4*attackMemMiB, attackMemMiB, r.ExitCode, r.Signal)
		}
		lines := strings.Fields(string(r.Stderr))
		got := "0"
		if len(lines) > 0 {
			got = lines[len(lines)-1]
		}
		oom, _ := e.small.Info().Backend["oom_kills"].(int)
		if oom < 1 {
			return "", fmt.Errorf("killed, but the box records no OOM kill (%v)", e.small.Info().Backend)
		}
		if rr, err := e.small.Run(ctx(t, 30*time.Second), libbox.Command{Args: []string{"echo", "alive"}}); err != nil || string(rr.Stdout) != "alive\n" {
			return "", fmt.Errorf("box unusable after the OOM kill: %q %v", rr.Stdout, err)
		}
		t.Logf("OOM-killed after %s MiB", got)
		return fmt.Sprintf("contained: SIGKILL by the OOM killer at the %d MiB limit (%s), counted in box info `oom_kills`; the box lives on", attackMemMiB, how), nil
	}},
	{"read another box's files through `/proc/<pid>/root`", func(t *testing.T, e *attackEnv) (string, error) {
		pid := e.peer.Info().Backend["pid"]
		pr := e.probe(t, fmt.Sprintf("read=/proc/%v/root/peer-secret", pid))
		return failsWith(pr, "ENOENT")
	}},
	{"read another box's upper dir (path from `/proc/self/mountinfo`)", func(t *testing.T, e *attackEnv) (string, error) {
		mi := e.sh(t, "cat /proc/self/mountinfo").Stdout
		upper := filepath.Join(e.peer.Info().Dir, "upper")
		own := filepath.Join(e.box.Info().Dir, "upper")
		if !bytes.Contains(mi, []byte(own)) {
			t.Logf("mountinfo does not show the upper dir %s; trying the host path", own)
		}
		return failsWith(e.probe(t, "read="+filepath.Join(upper, "peer-secret")), "ENOENT")
	}},
	{"escape through a volume symlink", func(t *testing.T, e *attackEnv) (string, error) {
		for _, l := range []string{"/vol/abs", "/vol/rel"} {
			pr := e.probe(t, "read="+l)
			if pr.Errno == "" {
				return "", fmt.Errorf("%s read %s", l, pr.Data)
			}
		}
		return "contained (the link resolves inside the box: ENOENT)", nil
	}},
	{"mount a volume through a symlink the box planted on its path", func(t *testing.T, e *attackEnv) (string, error) {
		// The box's layer makes /escape a link to a host dir anyone may
		// write; the volume at /escape/x must still land inside the box.
		hostDir, src := t.TempDir(), t.TempDir()
		if err := os.Chmod(hostDir, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, "marker"), []byte("volume"), 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := e.rt.Create(ctx(t, 60*time.Second), libbox.BoxOptions{Isolation: libbox.IsolationSandbox,
			Volumes: []libbox.Volume{{HostPath: src, BoxPath: "/escape/x", ReadOnly: true}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.rt.Remove(context.Background(), b.ID(), true) })
		if err := b.Start(ctx(t, 60*time.Second)); err != nil {
			t.Fatal(err)
		}
		if err := b.Stop(ctx(t, 60*time.Second)); err != nil {
			t.Fatal(err)
		}
		planted := filepath.Join(b.Info().Dir, "upper", "escape")
		if err := os.RemoveAll(planted); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(hostDir, planted); err != nil {
			t.Fatal(err)
		}
		if err := b.Start(ctx(t, 60*time.Second)); err != nil {
			return "", fmt.Errorf("start with the planted link: %v", err)
		}
		if ents, _ := os.ReadDir(hostDir); len(ents) > 0 {
			return "", fmt.Errorf("the boot made %s/%s on the host", hostDir, ents[0].Name())
		}
		r, err := b.Run(ctx(t, 60*time.Second), libbox.Command{Args: []string{"cat", "/escape/x/marker"}})
		if err != nil || string(r.Stdout) != "volume" {
			return "", fmt.Errorf("the volume is not at /escape/x in the box: %v %q %q", err, r.Stdout, r.Stderr)
		}
		return "contained (the mount point resolves inside the box)", nil
	}},
}

// buildProbe builds the static probe into a new directory.
func buildProbe(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "probe"), "./internal/probe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build probe: %v\n%s", err, out)
	}
	return dir
}

func newAttackEnv(t *testing.T, probeDir string) *attackEnv {
	t.Helper()
	e := &attackEnv{home: t.TempDir(), vol: t.TempDir()}
	e.secret = filepath.Join(t.TempDir(), "host-secret")
	if err := os.WriteFile(e.secret, []byte("host secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(e.secret, filepath.Join(e.vol, "abs")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(strings.Repeat("../", 16)+strings.TrimPrefix(e.secret, "/"), filepath.Join(e.vol, "rel")); err != nil {
		t.Fatal(err)
	}
	rt, err := libbox.Open(libbox.Options{Home: e.home, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	e.rt = rt
	start := func(o libbox.BoxOptions) *libbox.Box {
		o.Isolation = libbox.IsolationSandbox
		o.AutoRemove = true
		b, err := rt.Create(ctx(t, 60*time.Second), o)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(ctx(t, 60*time.Second)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rt.Remove(context.Background(), b.ID(), true) })
		return b
	}
	e.small = start(libbox.BoxOptions{MemoryMiB: attackMemMiB, Volumes: []libbox.Volume{{HostPath: probeDir, BoxPath: "/probe", ReadOnly: true}}})
	e.box = start(libbox.BoxOptions{Volumes: []libbox.Volume{
		{HostPath: probeDir, BoxPath: "/probe", ReadOnly: true},
		{HostPath: e.vol, BoxPath: "/vol"},
	}})
	e.peer = start(libbox.BoxOptions{})
	if r, err := e.peer.Run(ctx(t, 30*time.Second), libbox.Command{Args: []string{"sh", "-c", "echo peer > /peer-secret"}}); err != nil || r.ExitCode != 0 {
		t.Fatalf("peer: %v %d %q", err, r.ExitCode, r.Stderr)
	}
	return e
}

// Environment of the run as a normal user (see runAsUser).
const (
	childResultsEnv = "LIBBOX_ATTACK_RESULTS" // file the child writes its outcomes to
	childProbeEnv   = "LIBBOX_ATTACK_PROBE"   // dir holding the built probe
)

// TestAttackTable runs every attack of docs/security.md as root inside a
// sandbox box; each must be denied or contained, the host unchanged. On a
// root host it runs again as the user nobody (the host as a normal user).
// With LIBBOX_SECURITY_DOC=FILE it writes the table with both columns.
func TestAttackTable(t *testing.T) {
	requireSandbox(t)
	probeDir := os.Getenv(childProbeEnv)
	if probeDir == "" {
		probeDir = buildProbe(t)
	}
	e := newAttackEnv(t, probeDir)
	root := map[string]string{}
	for _, row := range attackRows {
		out, err := row.run(t, e)
		if err != nil {
			t.Errorf("%s: NOT STOPPED: %v", row.name, err)
			out = "NOT STOPPED: " + err.Error()
		}
		root[row.name] = out
		t.Logf("%-60s %s", row.name, out)
	}
	if f := os.Getenv(childResultsEnv); f != "" {
		b, _ := json.Marshal(root)
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
	user := runAsUser(t, probeDir)
	if doc := os.Getenv("LIBBOX_SECURITY_DOC"); doc != "" {
		var sb strings.Builder
		sb.WriteString("| attack | host runs as root | host runs as a normal user |\n|---|---|---|\n")
		for _, row := range attackRows {
			fmt.Fprintf(&sb, "| %s | %s | %s |\n", row.name, root[row.name], user[row.name])
		}
		if err := os.WriteFile(doc, []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// runAsUser runs this test binary as nobody, with its own home and temp
// dir, and returns its outcomes. The host's limits column then shows what
// an unprivileged host can enforce.
func runAsUser(t *testing.T, probeDir string) map[string]string {
	out := map[string]string{}
	skip := func(why string) map[string]string {
		t.Logf("not run as a normal user: %s", why)
		for _, row := range attackRows {
			out[row.name] = "not run: " + why
		}
		return out
	}
	if os.Geteuid() != 0 {
		return skip("the test already runs as a normal user")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return skip("no setpriv (util-linux)")
	}
	top, err := os.MkdirTemp("", "libbox-attack-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	const nobody = 65534
	dirs := map[string]string{}
	for _, d := range []string{"bin", "probe", "home", "tmp"} {
		dirs[d] = filepath.Join(top, d)
		if err := os.Mkdir(dirs[d], 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{top, dirs["bin"], dirs["probe"]} {
		os.Chmod(d, 0o755)
	}
	for _, d := range []string{dirs["home"], dirs["tmp"]} {
		if err := os.Chown(d, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	self, _ := os.Executable()
	for src, dst := range map[string]string{self: filepath.Join(dirs["bin"], "sandbox.test"), filepath.Join(probeDir, "probe"): filepath.Join(dirs["probe"], "probe")} {
		b, err := os.ReadFile(src)
		if err == nil {
			err = os.WriteFile(dst, b, 0o755)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	results := filepath.Join(dirs["tmp"], "results.json")
	cmd := exec.Command(setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups",
		filepath.Join(dirs["bin"], "sandbox.test"), "-test.run", "^TestAttackTable$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "HOME="+dirs["home"], "TMPDIR="+dirs["tmp"], childResultsEnv+"="+results, childProbeEnv+"="+dirs["probe"])
	cmd.Dir = dirs["tmp"]
	log, err := cmd.CombinedOutput()
	t.Logf("as a normal user (nobody):\n%s", log)
	b, rerr := os.ReadFile(results)
	if rerr != nil || json.Unmarshal(b, &out) != nil {
		t.Errorf("the run as a normal user wrote no results: %v %v", err, rerr)
		return skip("the run failed")
	}
	if err != nil {
		t.Errorf("the run as a normal user failed: %v", err)
	}
	return out
}

func requireSandbox(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/proc/self/ns/user"); err != nil {
		t.Skip("namespace sandbox needs user namespaces (a kernel with CONFIG_USER_NS)")
	}
}
