//go:build linux

package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/libbox/libbox/internal/testutil"
	"github.com/libbox/libbox/libbox/internal/hostid"
	"github.com/libbox/libbox/libbox/internal/vmboot"
)

// TestVMJail checks, from the host, what confines the shared box's QEMU:
// its seccomp filter; on a root host also its ids (the box's slice), its
// root (the box dir), its pid namespace, and its control group, which
// its virtiofsd helpers share.
func TestVMJail(t *testing.T) {
	inst, _ := sharedVM(t)
	pid := inst.Info()["pid"].(int)
	status := procStatus(t, pid)
	if status["Seccomp"] != "2" {
		t.Errorf("qemu %d: Seccomp %q, want 2 (a filter)", pid, status["Seccomp"])
	}
	if status["NoNewPrivs"] != "1" {
		t.Errorf("qemu %d: NoNewPrivs %q, want 1", pid, status["NoNewPrivs"])
	}
	if os.Geteuid() != 0 {
		if want := fmt.Sprint(os.Geteuid()); strings.Fields(status["Uid"])[0] != want {
			t.Errorf("qemu %d: Uid %q, want the caller's %s", pid, status["Uid"], want)
		}
		t.Skip("the rest (ids, chroot, pid namespace, cgroup) needs a root host: run the tests as root")
	}
	sl, _, err := hostid.Alloc(shared.spec.Dir) // the box's slice, as QEMU got it
	if err != nil {
		t.Fatal(err)
	}
	uid, gid := strconv.Itoa(int(sl.UID)), strconv.Itoa(int(sl.GID))
	if got := strings.Fields(status["Uid"]); len(got) != 4 || got[0] != uid || got[1] != uid || got[2] != uid || got[3] != uid {
		t.Errorf("qemu %d: Uid %q, want %s four times (the box's slice)", pid, status["Uid"], uid)
	}
	if got := strings.Fields(status["Gid"]); len(got) != 4 || got[0] != gid || got[3] != gid {
		t.Errorf("qemu %d: Gid %q, want %s", pid, status["Gid"], gid)
	}
	if status["Groups"] != gid {
		t.Errorf("qemu %d: Groups %q, want only %s", pid, status["Groups"], gid)
	}
	for _, c := range []string{"CapPrm", "CapEff", "CapAmb"} {
		if status[c] != "0000000000000000" {
			t.Errorf("qemu %d: %s %s, want none", pid, c, status[c])
		}
	}
	if root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", pid)); err != nil || root != shared.spec.Dir {
		t.Errorf("qemu %d: root %q (%v), want the box dir %s", pid, root, err, shared.spec.Dir)
	}
	var saved state
	if err := json.Unmarshal(inst.State(), &saved); err != nil || saved.PID != pid {
		t.Errorf("state names pid %d (%v), want QEMU's %d", saved.PID, err, pid)
	}
	if nspid := strings.Fields(status["NSpid"]); len(nspid) < 2 {
		t.Errorf("qemu %d: NSpid %q: want it in a pid namespace of its own", pid, status["NSpid"])
	}
	// The box dir is root's: QEMU cannot create or replace the host's files there.
	st, err := os.Stat(shared.spec.Dir)
	if err != nil || st.Mode().Perm() != 0o711 {
		t.Errorf("box dir: %v %v, want mode 0711", st.Mode(), err)
	}
	if disk, err := os.Stat(filepath.Join(shared.spec.Dir, "disk.qcow2")); err != nil || disk.Sys().(*syscall.Stat_t).Uid != sl.UID {
		t.Errorf("box disk: %v, want it owned by uid %s", err, uid)
	}
	// One control group for QEMU and its helpers, with the limits info names.
	group := boxGroup(t, pid)
	if group == "" {
		t.Errorf("qemu %d is in no libbox group: %s", pid, readTail(fmt.Sprintf("/proc/%d/cgroup", pid), 1024))
	}
	for _, h := range inst.(*instance).helpers {
		if g := boxGroup(t, h.PID); g != group {
			t.Errorf("virtiofsd %d in group %q, want QEMU's %q", h.PID, g, group)
		}
	}
	j := inst.Info()["jail"].(map[string]any)
	lim, _ := j["limits"].(map[string]string)
	limited := []string{"memory", "pids"}
	if inst.Info()["accel"] == AccelKVM {
		limited = append(limited, "cpus")
	}
	for _, name := range limited {
		if !strings.Contains(lim[name], "cgroup") || strings.Contains(lim[name], "not enforced") {
			t.Errorf("limit %s: %q, want a cgroup enforcing it", name, lim[name])
		}
	}
	t.Logf("qemu %d: Uid %s, Seccomp %s, root %s, group %s; jail %v", pid, status["Uid"], status["Seccomp"], shared.spec.Dir, group, j)
}

// TestVMVolumeJail checks, from the host and the guest, the shared box's
// virtiofsd helpers on a root host: they run as the box's slice of host
// ids, not root; a guest file lands on the host with the guest's ids (the
// id-mapped volume); host files of ids outside the slice are the guest's
// nobody, which even guest root cannot write; read-only volumes reject
// writes.
func TestVMVolumeJail(t *testing.T) {
	_, cl := sharedVM(t)
	if len(shared.spec.Volumes) == 0 {
		testutil.RequireRoot(t, "VM volumes (virtiofsd)")
	}
	inst := shared.inst.(*instance)
	sl, _, err := hostid.Alloc(shared.spec.Dir)
	if err != nil {
		t.Fatal(err)
	}
	uid, gid := strconv.Itoa(int(sl.UID)), strconv.Itoa(int(sl.GID))
	if len(inst.helpers) != len(shared.spec.Volumes) {
		t.Fatalf("%d helpers for %d volumes", len(inst.helpers), len(shared.spec.Volumes))
	}
	infos, _ := inst.Info()["volumes"].([]string)
	for n, h := range inst.helpers {
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", h.PID)); strings.TrimSpace(string(comm)) != "virtiofsd" {
			t.Errorf("helper %d is %q, want virtiofsd", h.PID, comm)
		}
		status := procStatus(t, h.PID)
		if got := strings.Fields(status["Uid"]); len(got) != 4 || got[0] != uid || got[1] != uid || got[2] != uid || got[3] != uid {
			t.Errorf("virtiofsd %d: Uid %q, want %s four times (the box's slice, not root)", h.PID, status["Uid"], uid)
		}
		if got := strings.Fields(status["Gid"]); len(got) != 4 || got[0] != gid || got[3] != gid {
			t.Errorf("virtiofsd %d: Gid %q, want %s", h.PID, status["Gid"], gid)
		}
		if status["Seccomp"] != "2" {
			t.Errorf("virtiofsd %d: Seccomp %q, want 2 (its own filter)", h.PID, status["Seccomp"])
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", h.PID)); err != nil || ns == mustReadlink(t, "/proc/self/ns/user") {
			t.Errorf("virtiofsd %d: user namespace %q (%v), want one of its own", h.PID, ns, err)
		}
		// Its root (chroot) is the volume, mounted in its own namespace.
		root, err1 := os.Stat(fmt.Sprintf("/proc/%d/root/.", h.PID))
		vol, err2 := os.Stat(shared.spec.Volumes[n].HostPath)
		if err1 != nil || err2 != nil || !os.SameFile(root, vol) {
			t.Errorf("virtiofsd %d: its root is not its volume %s (%v, %v)", h.PID, shared.spec.Volumes[n].HostPath, err1, err2)
		}
		if n >= len(infos) || !strings.Contains(infos[n], "as uid "+uid) || !strings.Contains(infos[n], "id-mapped") {
			t.Errorf("box info volumes: %q, want volume %d's virtiofsd as uid %s, id-mapped", infos, n, uid)
		}
	}
	rw := shared.spec.Volumes[1].HostPath
	// A host file of a uid outside the slice (0644): nobody's to the guest.
	far := filepath.Join(rw, "far.txt")
	if err := os.WriteFile(far, []byte("far\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(far, 70000, 70000); err != nil {
		t.Fatal(err)
	}
	got := mustRun(t, cl, "sh", "-c", `cd '/mnt/my rw' && echo guest > mine.txt && echo other > other.txt && chown 1234:2345 other.txt && stat -c '%u:%g' far.txt`)
	if got != "65534:65534\n" {
		t.Errorf("a host file of uid 70000 is %q to the guest, want nobody (65534:65534)", got)
	}
	for name, want := range map[string][2]uint32{"mine.txt": {0, 0}, "other.txt": {1234, 2345}} {
		st, err := os.Stat(filepath.Join(rw, name))
		if err != nil {
			t.Errorf("guest file %s: %v", name, err)
			continue
		}
		if s := st.Sys().(*syscall.Stat_t); s.Uid != want[0] || s.Gid != want[1] {
			t.Errorf("guest file %s is %d:%d on the host, want %d:%d (guest ids are host ids)", name, s.Uid, s.Gid, want[0], want[1])
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, script := range []string{"echo x >> '/mnt/my rw/far.txt'", "chown 0:0 '/mnt/my rw/far.txt'", "touch /mnt/ro/jail-probe"} {
		r, err := run(ctx, cl, "sh", "-c", script)
		if err != nil {
			t.Fatal(err)
		}
		if r.exit.ExitCode == 0 {
			t.Errorf("guest root: %q succeeded", script)
		}
	}
	if b, err := os.ReadFile(far); err != nil || string(b) != "far\n" {
		t.Errorf("far.txt: %q %v: the guest changed a file outside its ids", b, err)
	}
	if st, err := os.Stat(far); err != nil || st.Sys().(*syscall.Stat_t).Uid != 70000 {
		t.Errorf("far.txt: %v, want it still uid 70000", err)
	}
	if _, err := os.Stat(filepath.Join(shared.spec.Volumes[0].HostPath, "jail-probe")); err == nil {
		t.Error("a read-only volume was written")
	}
	t.Logf("volumes: %q", infos)
}

func mustReadlink(t *testing.T, path string) string {
	t.Helper()
	s, err := os.Readlink(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestVMJailNormalUser starts a VM box with the CLI run by the user
// nobody (a normal user's host) and checks its QEMU from the host: it runs
// as nobody, with the seccomp filter that forbids raising privileges, and
// without -runas or -chroot (a normal user has nothing to drop to).
func TestVMJailNormalUser(t *testing.T) {
	requireVM(t)
	testutil.RequireRoot(t, "switching to the user nobody (on a normal user's host TestVMJail checks the same)")
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	repo := filepath.Dir(strings.TrimSpace(string(out)))
	cli, kit := filepath.Join(repo, "build", "bin", "box"), filepath.Join(repo, "build", "lib", vmboot.KitDirName)
	if _, err := os.Stat(cli); err != nil {
		t.Skipf("no CLI at %s: run ./build.sh build first", cli)
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("no setpriv: apt-get install util-linux")
	}
	// The CLI and the kernel kit beside it, where nobody can read them.
	top := filepath.Join(workDir, "normal-user")
	const nobody = 65534
	for _, d := range []string{top, filepath.Join(top, "bin"), filepath.Join(top, "lib"), filepath.Join(top, "home")} {
		testutil.Must(t, os.MkdirAll(d, 0o755))
		testutil.Must(t, os.Chmod(d, 0o755))
	}
	testutil.Must(t, os.Chown(filepath.Join(top, "home"), nobody, nobody))
	testutil.Must(t, os.Chmod(workDir, 0o755)) // so nobody reaches top
	if b, err := exec.Command("cp", "-a", cli, filepath.Join(top, "bin", "box")).CombinedOutput(); err != nil {
		t.Fatalf("copy the CLI: %v %s", err, b)
	}
	if _, err := os.Stat(kit); err == nil {
		if b, err := exec.Command("cp", "-a", kit, filepath.Join(top, "lib")).CombinedOutput(); err != nil {
			t.Fatalf("copy the kernel kit: %v %s", err, b)
		}
	}
	home := filepath.Join(top, "home")
	box := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a TCG boot under load
		defer cancel()
		cmd := exec.CommandContext(ctx, setpriv, append([]string{"--reuid", "65534", "--regid", "65534", "--clear-groups", filepath.Join(top, "bin", "box")}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+home, "TMPDIR="+home, "LIBBOX_HOME="+filepath.Join(home, "libbox"))
		cmd.Dir = home
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	if out, err := box("run", "-d", "--name", "jailuser", "busybox", "sleep", "3600"); err != nil {
		t.Fatalf("box run -d as nobody: %v\n%s", err, out)
	}
	defer func() {
		if out, err := box("rm", "-f", "jailuser"); err != nil {
			t.Errorf("box rm -f as nobody: %v\n%s", err, out)
		}
	}()
	out2, err := box("inspect", "jailuser")
	if err != nil {
		t.Fatalf("box inspect as nobody: %v\n%s", err, out2)
	}
	var info struct {
		Backend struct {
			PID  int            `json:"pid"`
			Jail map[string]any `json:"jail"`
		} `json:"backend"`
	}
	if err := json.Unmarshal([]byte(out2[strings.Index(out2, "{"):]), &info); err != nil || info.Backend.PID == 0 {
		t.Fatalf("box inspect: no QEMU pid (%v):\n%s", err, out2)
	}
	pid := info.Backend.PID
	status := procStatus(t, pid)
	if got := strings.Fields(status["Uid"]); len(got) != 4 || got[0] != "65534" || got[1] != "65534" || got[2] != "65534" || got[3] != "65534" {
		t.Errorf("qemu %d: Uid %q, want nobody's 65534", pid, status["Uid"])
	}
	if status["Seccomp"] != "2" || status["NoNewPrivs"] != "1" {
		t.Errorf("qemu %d: Seccomp %q NoNewPrivs %q, want 2 and 1", pid, status["Seccomp"], status["NoNewPrivs"])
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	argv := strings.Split(string(cmdline), "\x00")
	want := seccompFlags(false)
	if !slices.Contains(argv, want) || slices.Contains(argv, "-runas") || slices.Contains(argv, "-chroot") {
		t.Errorf("qemu %d: argv %q, want -sandbox %s and no -runas or -chroot", pid, argv, want)
	}
	// The box's saved jail (what inspect shows of a box another process
	// started): the filter, and no ids to drop to.
	if info.Backend.Jail["seccomp"] != want || info.Backend.Jail["uid"] != nil {
		t.Errorf("box info jail %v, want seccomp %s and no uid", info.Backend.Jail, want)
	}
	t.Logf("as nobody: qemu %d, Uid %s, Seccomp %s, jail %v", pid, status["Uid"], status["Seccomp"], info.Backend.Jail)
}

// procStatus reads /proc/<pid>/status into a map.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// boxGroup is the libbox/<box id> group pid is in (memory controller or
// cgroup v2), or "".
func boxGroup(t *testing.T, pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && (parts[1] == "" || strings.Contains(parts[1], "memory")) && strings.HasSuffix(parts[2], "/libbox/"+shared.spec.ID) {
			return parts[2]
		}
	}
	return ""
}

// TestJailArgs checks QEMU's argv for both kinds of host without a VM.
func TestJailArgs(t *testing.T) {
	user := &jail{Seccomp: seccompFlags(false)}
	if got := strings.Join(user.args(), " "); got != "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny" {
		t.Errorf("normal user's host: %q", got)
	}
	if bin, args, err := user.command("/usr/bin/qemu-system-x86_64", []string{"-m", "64"}); err != nil || bin != "/usr/bin/qemu-system-x86_64" || strings.Join(args, " ") != strings.Join(user.args(), " ")+" -m 64" {
		t.Errorf("normal user's host runs %q %q (%v), want QEMU itself", bin, args, err)
	}
	root := &jail{Seccomp: seccompFlags(true), UID: 1610612736, GID: 1610612737, Root: "/var/lib/boxes/a,b"}
	want := "-sandbox on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny -runas 1610612736:1610612737 -chroot /var/lib/boxes/a,,b"
	if got := strings.Join(root.args(), " "); got != want {
		t.Errorf("root host: %q, want %q", got, want)
	}
	bin, args, err := root.command("/usr/bin/qemu-system-x86_64", []string{"-drive", "file=/var/lib/boxes/a,,b/disk.qcow2,if=none", "-m", "64"})
	if err != nil {
		t.Skip(err)
	}
	want = `--wd /var/lib/boxes/a,b --pid --fork --kill-child -- /bin/sh -c "$@" & wait $! sh /usr/bin/qemu-system-x86_64 ` + want + " -drive file=disk.qcow2,if=none -m 64"
	if filepath.Base(bin) != "unshare" || strings.Join(args, " ") != want {
		t.Errorf("root host runs %q %q,\nwant QEMU under a pid namespace init, in the box dir: %q", bin, args, want)
	}
}
