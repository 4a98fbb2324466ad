// Package cgroup makes, joins, reads and removes a box's control groups:
// cgroup v2 when this host has a v2 hierarchy with the controllers, else
// the cgroup v1 controllers (pids, memory, cpu) that are mounted and
// writable. The sandbox backend puts a box's agent there, the VM backend
// its QEMU and helpers. It never moves the host process itself and never
// touches a group outside libbox/<box id>.
package cgroup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
)

// Limits are what a box asks for; 0 means none.
type Limits struct {
	CPUs, MemoryMiB, Pids int
	// SpawnerPids puts the pids limit on a child group, "box", that only
	// a spawn thread joins (through SpawnFD), so the processes it forks are
	// counted there and the other threads of the group's process are not:
	// a box's agent stays able to make threads while the box is at its
	// limit. A single thread may join a v1 group, or a threaded v2 one.
	// Where that fails SpawnFD stays -1 and the whole process is limited.
	SpawnerPids bool
}

// Group is the box's control group: one cgroup v2 group when this host
// has a v2 hierarchy with the controllers (the first process is started
// in it through FD), else one group per cgroup v1 controller (pids,
// memory, cpu, freezer) that is mounted and writable here (processes join them
// right after they start). Groups are made under the host process's own
// group of each hierarchy, in libbox/<box id>, and removed when the box
// is gone.
type Group struct {
	Path string // v2 group
	FD   int    // v2 group dir, for CLONE_INTO_CGROUP; -1 when none
	// SpawnFD is the spawn group's "tasks" (v1) or "cgroup.threads" (v2)
	// file, opened for writing (see Limits.SpawnerPids): a thread that
	// writes "0" to it joins that group, and what it forks is born there.
	// -1 when none.
	SpawnFD int
	v1      map[string]string
	// how records, for each limit, what enforces it or why nothing does.
	how map[string]string
}

const cgroupRoot = "/sys/fs/cgroup"

// New makes the groups of box id with limits l. What it cannot enforce is
// recorded, not returned: Describe says it.
func New(id string, l Limits) *Group {
	cg := &Group{FD: -1, SpawnFD: -1, how: map[string]string{}}
	want := map[string]string{} // controller -> limit name
	if l.Pids > 0 {
		want["pids"] = "pids"
	}
	if l.MemoryMiB > 0 {
		want["memory"] = "memory"
	}
	if l.CPUs > 0 {
		want["cpu"] = "cpus"
	}
	if len(want) == 0 {
		return cg
	}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		cg.setupV2(id, l, want)
	} else {
		want["freezer"] = "freeze" // no limit: lets a snapshot pause the box (Freeze)
		cg.setupV1(id, l, want)
	}
	return cg
}

// files lists the control files that set limit l through controller c,
// in cgroup v2 or v1 terms.
func controlFiles(c string, l Limits, v2 bool) [][2]string {
	switch {
	case c == "pids":
		return [][2]string{{"pids.max", strconv.Itoa(l.Pids)}}
	case c == "memory" && v2:
		return [][2]string{{"memory.max", strconv.Itoa(l.MemoryMiB << 20)}, {"memory.swap.max", "0"}}
	case c == "memory":
		return [][2]string{{"memory.limit_in_bytes", strconv.Itoa(l.MemoryMiB << 20)}, {"memory.memsw.limit_in_bytes", strconv.Itoa(l.MemoryMiB << 20)}}
	case c == "cpu" && v2:
		return [][2]string{{"cpu.max", fmt.Sprintf("%d 100000", l.CPUs*100000)}}
	case c == "cpu":
		return [][2]string{{"cpu.cfs_period_us", "100000"}, {"cpu.cfs_quota_us", strconv.Itoa(l.CPUs * 100000)}}
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

func (cg *Group) setupV2(id string, l Limits, want map[string]string) {
	ctrl, _ := os.ReadFile(filepath.Join(cgroupRoot, "cgroup.controllers"))
	have := strings.Fields(string(ctrl))
	var need []string
	for c, name := range want {
		if !slices.Contains(have, c) {
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
		cg.CloseFD()
		removeGroup(p)
		for _, c := range need {
			cg.how[want[c]] = "not enforced: cgroup v2: " + err.Error()
		}
	}
	if err := os.Mkdir(p, 0o755); err != nil && !os.IsExist(err) {
		fail(err)
		return
	}
	split := slices.Contains(need, "pids") && l.SpawnerPids && cg.spawnV2(p, l)
	for _, c := range need {
		if c == "pids" && split {
			continue
		}
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
	cg.Path, cg.FD = p, fd
	for _, c := range need {
		cg.how[want[c]] = "cgroup v2 " + p
	}
	if split {
		cg.how["pids"] = "cgroup v2 " + filepath.Join(p, spawnGroup) + spawnHow
	}
}

// spawnV2 makes the spawn group of Limits.SpawnerPids under the v2 group
// p: a threaded child (so a single thread may join it; pids is a threaded
// controller, memory and cpu stay on p for the whole process) with the
// pids limit, and sets SpawnFD to its cgroup.threads. False when this
// host cannot; p is then as before.
func (cg *Group) spawnV2(p string, l Limits) bool {
	box := filepath.Join(p, spawnGroup)
	err := os.Mkdir(box, 0o755)
	if err == nil {
		err = writeControls(box, [][2]string{{"cgroup.type", "threaded"}})
	}
	if err == nil {
		err = writeControls(p, [][2]string{{"cgroup.subtree_control", "+pids"}})
	}
	if err == nil {
		err = writeControls(box, controlFiles("pids", l, true))
	}
	if err == nil {
		cg.SpawnFD, err = unix.Open(filepath.Join(box, "cgroup.threads"), unix.O_WRONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		cg.SpawnFD = -1
		_ = os.WriteFile(filepath.Join(p, "cgroup.subtree_control"), []byte("-pids"), 0)
		_ = os.Remove(box)
		return false
	}
	return true
}

// spawnHow ends the description of a split pids limit.
const spawnHow = " (what the spawn thread forks; the rest of the process is outside it)"

func (cg *Group) setupV1(id string, l Limits, want map[string]string) {
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
		limited := p
		if err == nil && c == "pids" && l.SpawnerPids {
			limited = filepath.Join(p, spawnGroup)
			err = os.Mkdir(limited, 0o755)
		}
		if err == nil {
			err = writeControls(limited, controlFiles(c, l, false))
		}
		if err == nil && limited != p {
			cg.SpawnFD, err = unix.Open(filepath.Join(limited, "tasks"), unix.O_WRONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				cg.SpawnFD = -1
			}
		}
		if err != nil {
			removeGroup(p)
			cg.how[name] = "not enforced: cgroup v1 " + c + ": " + err.Error()
			continue
		}
		cg.v1[c] = p
		cg.how[name] = "cgroup v1 " + limited
		if limited != p {
			cg.how[name] += spawnHow
		}
	}
}

// spawnGroup is the child group of Limits.SpawnerPids.
const spawnGroup = "box"

// removeGroup removes a group and its spawn group, if any; false while
// one is still busy (an exiting process keeps it so for a moment).
func removeGroup(p string) bool {
	for _, d := range []string{filepath.Join(p, spawnGroup), p} {
		if err := os.Remove(d); errors.Is(err, unix.EBUSY) {
			return false
		}
	}
	return true
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

// Attach is the group of a box started by an earlier process, from its
// Path and V1Dirs.
func Attach(v2 string, v1 []string) *Group {
	cg := &Group{FD: -1, SpawnFD: -1, Path: v2, v1: map[string]string{}, how: map[string]string{}}
	for _, p := range v1 {
		// .../<controller>/<rel>/libbox/<id>
		rest := strings.TrimPrefix(p, cgroupRoot+"/")
		c, _, _ := strings.Cut(rest, "/")
		cg.v1[c] = p
	}
	return cg
}

// Join moves pid (all its threads) into the groups: the v1 groups, and
// the v2 group unless pid was started in it (FD). The spawn group of
// Limits.SpawnerPids is not joined here: its thread joins it (SpawnFD).
func (cg *Group) Join(pid int) {
	if cg.Path != "" {
		if err := os.WriteFile(filepath.Join(cg.Path, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			for name, how := range cg.how {
				if strings.HasPrefix(how, "cgroup v2") {
					cg.how[name] = "not enforced: join cgroup v2: " + err.Error()
				}
			}
		}
	}
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

// V1Dirs are the v1 groups, one per controller.
func (cg *Group) V1Dirs() []string {
	var out []string
	for _, p := range cg.v1 {
		out = append(out, p)
	}
	return out
}

// Describe says, for every limit, what enforces it.
func (cg *Group) Describe(l Limits) map[string]string {
	out := map[string]string{}
	for name, v := range map[string]int{"pids": l.Pids, "memory": l.MemoryMiB, "cpus": l.CPUs} {
		switch {
		case v == 0:
			out[name] = "none requested"
		case cg.how[name] != "":
			out[name] = fmt.Sprintf("%d: %s", v, cg.how[name])
		}
	}
	if l.MemoryMiB > 0 {
		out["memory"] = strings.Replace(out["memory"], fmt.Sprint(l.MemoryMiB), fmt.Sprintf("%d MiB", l.MemoryMiB), 1)
	}
	return out
}

// OOMKills is how many processes the kernel's OOM killer ended in the
// box's memory group; false when the box has none.
func (cg *Group) OOMKills() (int, bool) {
	var file string
	switch {
	case cg.Path != "":
		file = filepath.Join(cg.Path, "memory.events")
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

// CloseFD closes FD and SpawnFD once the first process started.
func (cg *Group) CloseFD() {
	for _, fd := range []*int{&cg.FD, &cg.SpawnFD} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

// Remove deletes the groups once their processes are gone (an exiting
// process may keep a group busy for a moment).
func (cg *Group) Remove() {
	dirs := cg.V1Dirs()
	if cg.Path != "" {
		dirs = append(dirs, cg.Path)
	}
	for _, d := range dirs {
		for i := 0; i < 50 && !removeGroup(d); i++ {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// Freeze stops every process of the box (the agent too) until thaw is
// called: cgroup v2's cgroup.freeze, or v1's freezer. A box with neither
// is not paused (its processes may write while the layer is copied).
func (cg *Group) Freeze(ctx context.Context) (thaw func() error, err error) {
	var file, on, off, events, frozen string
	switch {
	case cg.Path != "":
		file, on, off = filepath.Join(cg.Path, "cgroup.freeze"), "1", "0"
		events, frozen = filepath.Join(cg.Path, "cgroup.events"), "frozen 1"
	case cg.v1["freezer"] != "":
		file, on, off = filepath.Join(cg.v1["freezer"], "freezer.state"), "FROZEN", "THAWED"
		events, frozen = file, "FROZEN"
	default:
		unix.Sync()
		return func() error { return nil }, nil
	}
	thaw = func() error {
		if err := os.WriteFile(file, []byte(off), 0); err != nil {
			return errdefs.Wrap(errdefs.Internal, err, "thaw the box (%s)", file)
		}
		return nil
	}
	// A task the freezer cannot stop keeps the group freezing for good: the
	// classic one is a parent in vfork (the agent's spawn thread) whose child
	// was frozen before it exec'd. So each try waits a little, then thaws, lets
	// such a spawn finish, and tries again, waiting longer each time.
	for try := 1; ; try++ {
		if err := os.WriteFile(file, []byte(on), 0); err != nil {
			return nil, errdefs.Wrap(errdefs.Internal, err, "freeze the box (%s)", file)
		}
		wait := time.After(min(time.Duration(try)*20*time.Millisecond, time.Second))
	poll:
		for delay := time.Millisecond; ; delay = min(2*delay, 20*time.Millisecond) {
			b, err := os.ReadFile(events)
			if err == nil && strings.Contains(string(b), frozen) {
				return thaw, nil
			}
			select {
			case <-ctx.Done():
				_ = thaw()
				return nil, errdefs.Wrap(errdefs.CodeOf(ctx.Err()), ctx.Err(), "freeze the box")
			case <-wait:
				break poll
			case <-time.After(delay):
			}
		}
		if err := thaw(); err != nil {
			return nil, err
		}
		if try == freezeTries {
			return nil, errdefs.New(errdefs.Unavailable, "the box could not be paused: a process stayed in a state the cgroup freezer cannot stop through %d tries (%s); try again", try, file)
		}
		time.Sleep(time.Duration(try) * time.Millisecond)
	}
}

// freezeTries bounds Freeze's attempts (about 10 s of trying in all).
const freezeTries = 30
