package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultPidsLimit is how many processes and threads a sandbox box may
// have at once (a fork bomb stops there).
const DefaultPidsLimit = 4096

// limits is what a box asks for; 0 means none.
type limits struct {
	cpus, memMiB, pids int
}

// cgroup is the box's control group: one cgroup v2 group when this host
// has a v2 hierarchy with the controllers (the agent is started in it),
// else one group per cgroup v1 controller (pids, memory, cpu, freezer) that is
// mounted and writable here (the agent joins them right after it starts).
// Groups are made under the host process's own group of each hierarchy,
// in libbox/<box id>, and removed when the box is gone.
type cgroup struct {
	path string // v2 group
	fd   int    // v2 group dir, for CLONE_INTO_CGROUP; -1 when none
	v1   map[string]string
	// how records, for each limit, what enforces it or why nothing does.
	how map[string]string
}

const cgroupRoot = "/sys/fs/cgroup"

func newCgroup(id string, l limits) *cgroup {
	cg := &cgroup{fd: -1, how: map[string]string{}}
	want := map[string]string{} // controller -> limit name
	if l.pids > 0 {
		want["pids"] = "pids"
	}
	if l.memMiB > 0 {
		want["memory"] = "memory"
	}
	if l.cpus > 0 {
		want["cpu"] = "cpus"
	}
	if len(want) == 0 {
		return cg
	}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		cg.setupV2(id, l, want)
	} else {
		want["freezer"] = "freeze" // no limit: lets a snapshot pause the box
		cg.setupV1(id, l, want)
	}
	return cg
}

// files lists the control files that set limit l through controller c,
// in cgroup v2 or v1 terms.
func controlFiles(c string, l limits, v2 bool) [][2]string {
	switch {
	case c == "pids":
		return [][2]string{{"pids.max", strconv.Itoa(l.pids)}}
	case c == "memory" && v2:
		return [][2]string{{"memory.max", strconv.Itoa(l.memMiB << 20)}, {"memory.swap.max", "0"}}
	case c == "memory":
		return [][2]string{{"memory.limit_in_bytes", strconv.Itoa(l.memMiB << 20)}, {"memory.memsw.limit_in_bytes", strconv.Itoa(l.memMiB << 20)}}
	case c == "cpu" && v2:
		return [][2]string{{"cpu.max", fmt.Sprintf("%d 100000", l.cpus*100000)}}
	case c == "cpu":
		return [][2]string{{"cpu.cfs_period_us", "100000"}, {"cpu.cfs_quota_us", strconv.Itoa(l.cpus * 100000)}}
	}
	return nil
}

// optional control files: absent on some kernels (no swap accounting).
var optionalFile = map[string]bool{"memory.swap.max": true, "memory.memsw.limit_in_bytes": true}

func writeControls(dir string, files [][2]string) error {
	for _, f := range files {
		err := os.WriteFile(filepath.Join(dir, f[0]), []byte(f[1]), 0)
		if err != nil && !(optionalFile[f[0]] && errors.Is(err, os.ErrNotExist)) {
			return fmt.Errorf("%s: %w", f[0], err)
		}
	}
	return nil
}

func (cg *cgroup) setupV2(id string, l limits, want map[string]string) {
	ctrl, _ := os.ReadFile(filepath.Join(cgroupRoot, "cgroup.controllers"))
	have := strings.Fields(string(ctrl))
	var need []string
	for c, name := range want {
		if !contains(have, c) {
			cg.how[name] = "not enforced: cgroup v2 controller " + c + " is not available"
			continue
		}
		need = append(need, c)
	}
	if len(need) == 0 {
		return
	}
	parent := filepath.Join(cgroupRoot, "libbox")
	_ = os.Mkdir(parent, 0o755)
	ctl := "+" + strings.Join(need, " +")
	_ = os.WriteFile(filepath.Join(cgroupRoot, "cgroup.subtree_control"), []byte(ctl), 0)
	_ = os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte(ctl), 0)
	p := filepath.Join(parent, id)
	fail := func(err error) {
		os.Remove(p)
		for _, c := range need {
			cg.how[want[c]] = "not enforced: cgroup v2: " + err.Error()
		}
	}
	if err := os.Mkdir(p, 0o755); err != nil && !os.IsExist(err) {
		fail(err)
		return
	}
	for _, c := range need {
		if err := writeControls(p, controlFiles(c, l, true)); err != nil {
			fail(err)
			return
		}
	}
	fd, err := unix.Open(p, unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_RDONLY, 0)
	if err != nil {
		fail(err)
		return
	}
	cg.path, cg.fd = p, fd
	for _, c := range need {
		cg.how[want[c]] = "cgroup v2 " + p
	}
}

func (cg *cgroup) setupV1(id string, l limits, want map[string]string) {
	self := selfCgroupsV1()
	cg.v1 = map[string]string{}
	for c, name := range want {
		rel, ok := self[c]
		mount := filepath.Join(cgroupRoot, c)
		if _, err := os.Stat(filepath.Join(mount, "cgroup.procs")); !ok || err != nil {
			cg.how[name] = "not enforced: no cgroup v2 controller and no cgroup v1 " + c + " hierarchy mounted at " + mount
			continue
		}
		p := filepath.Join(mount, rel, "libbox", id)
		err := os.MkdirAll(p, 0o755)
		if err == nil {
			err = writeControls(p, controlFiles(c, l, false))
			if err != nil {
				os.Remove(p)
			}
		}
		if err != nil {
			cg.how[name] = "not enforced: cgroup v1 " + c + ": " + err.Error()
			continue
		}
		cg.v1[c] = p
		cg.how[name] = "cgroup v1 " + p
	}
}

// selfCgroupsV1 maps each v1 controller to this process's group in it.
func selfCgroupsV1() map[string]string {
	out := map[string]string{}
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 || parts[1] == "" {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// attachCgroup is the cgroup of a box started by an earlier process.
func attachCgroup(v2 string, v1 []string) *cgroup {
	cg := &cgroup{fd: -1, path: v2, v1: map[string]string{}}
	for _, p := range v1 {
		// .../<controller>/<rel>/libbox/<id>
		rest := strings.TrimPrefix(p, cgroupRoot+"/")
		c, _, _ := strings.Cut(rest, "/")
		cg.v1[c] = p
	}
	return cg
}

// join moves pid into the v1 groups.
func (cg *cgroup) join(pid int) {
	for c, p := range cg.v1 {
		if err := os.WriteFile(filepath.Join(p, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			cg.how[limitOf(c)] = "not enforced: join cgroup v1 " + c + ": " + err.Error()
			os.Remove(p)
			delete(cg.v1, c)
		}
	}
}

func limitOf(c string) string {
	return map[string]string{"pids": "pids", "memory": "memory", "cpu": "cpus", "freezer": "freeze"}[c]
}

func (cg *cgroup) v1Dirs() []string {
	var out []string
	for _, p := range cg.v1 {
		out = append(out, p)
	}
	return out
}

// describe says, for every limit, what enforces it.
func (cg *cgroup) describe(l limits) map[string]string {
	out := map[string]string{}
	for name, v := range map[string]int{"pids": l.pids, "memory": l.memMiB, "cpus": l.cpus} {
		switch {
		case v == 0:
			out[name] = "none requested"
		case cg.how[name] != "":
			out[name] = fmt.Sprintf("%d: %s", v, cg.how[name])
		}
	}
	if l.pids > 0 {
		out["pids"] += "; RLIMIT_NPROC per box uid"
	}
	if l.memMiB > 0 {
		out["memory"] = strings.Replace(out["memory"], fmt.Sprint(l.memMiB), fmt.Sprintf("%d MiB", l.memMiB), 1)
	}
	return out
}

// oomKills is how many processes the kernel's OOM killer ended in the
// box's memory group; false when the box has none.
func (cg *cgroup) oomKills() (int, bool) {
	var file string
	switch {
	case cg.path != "":
		file = filepath.Join(cg.path, "memory.events")
	case cg.v1["memory"] != "":
		file = filepath.Join(cg.v1["memory"], "memory.oom_control")
	default:
		return 0, false
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if n, ok := strings.CutPrefix(line, "oom_kill "); ok {
			v, err := strconv.Atoi(strings.TrimSpace(n))
			return v, err == nil
		}
	}
	return 0, false
}

func (cg *cgroup) closeFD() {
	if cg.fd >= 0 {
		unix.Close(cg.fd)
		cg.fd = -1
	}
}

// remove deletes the groups once their processes are gone (an exiting
// process may keep a group busy for a moment).
func (cg *cgroup) remove() {
	dirs := cg.v1Dirs()
	if cg.path != "" {
		dirs = append(dirs, cg.path)
	}
	for _, d := range dirs {
		for i := 0; i < 50; i++ {
			err := os.Remove(d)
			if err == nil || os.IsNotExist(err) || !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
