package qemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/internal/cgroup"
	"github.com/libbox/libbox/libbox/internal/hostid"
	"github.com/libbox/libbox/libbox/internal/vmboot"
)

// A box's QEMU is confined on the host, so that a guest which breaks a
// device model gets as little as possible:
//
//   - always, QEMU's seccomp filter (-sandbox, see seccompFlags);
//   - on a root host, QEMU drops to the first uid and gid of the box's
//     slice of unprivileged host ids (libbox/internal/hostid, the slices
//     sandbox boxes map their user namespace onto) with -runas, after
//     chrooting into the box dir with -chroot: it opens everything it needs
//     (kernel, initramfs, disks, sockets, /dev/kvm, the virtiofsd sockets)
//     before, as root, and afterwards reaches no file but the box dir's.
//     The box dir stays root's (mode 0711): QEMU cannot create, rename or
//     delete the host's files there (state.json, config.json); only the
//     box's disk is its own. The box's QEMU and its virtiofsd helpers share
//     one control group (libbox/internal/cgroup) that bounds their memory,
//     CPU time (under KVM; under TCG throttling puts the guest's clock
//     behind) and task count.
//
// A credential change clears a process's parent-death signal, so a QEMU
// that ran -runas would outlive its host process. On a root host QEMU
// therefore runs under "unshare --pid --fork --kill-child sh": sh is the
// init of a new pid namespace and dies with unshare (which dies with the
// host process unless the box is detached); when the init of a pid
// namespace dies the kernel kills the rest of it, QEMU included. unshare
// is the process the backend watches; QEMU's own pid is found under it,
// and is the pid box info and the box's state give.
//
// A normal user's host keeps QEMU as that user, in the host's mount
// namespace and cgroup, with the seccomp filter only.

// jail is how one box's QEMU is confined; it is saved in the box's state
// so that Attach knows it again.
type jail struct {
	Seccomp string `json:"seccomp"`
	UID     int    `json:"uid,omitempty"` // 0: QEMU keeps the caller's ids
	GID     int    `json:"gid,omitempty"`
	IDs     string `json:"ids,omitempty"`  // where the ids come from
	Root    string `json:"root,omitempty"` // -chroot dir
	// Launched is the process the backend started and watches (unshare)
	// when it is not QEMU itself; the box's state names QEMU.
	Launched      int    `json:"launched_pid,omitempty"`
	LaunchedStart uint64 `json:"launched_start_time,omitempty"`
	QEMUPID       int    `json:"-"`
	qemuStart     uint64
	Cgroup        string            `json:"cgroup,omitempty"`
	CgroupV1      []string          `json:"cgroup_v1,omitempty"`
	Limits        map[string]string `json:"limits,omitempty"`

	cg *cgroup.Group
}

// qemuPidsLimit bounds the tasks of a box's QEMU and helpers (QEMU's
// vCPU, I/O and worker threads; virtiofsd's thread pool).
const qemuPidsLimit = 1024

// qemuOverheadMiB is what a box's QEMU may use beside the guest's RAM
// (device models, I/O buffers, the virtiofsd helpers); under TCG QEMU 7.2
// adds its translated-code cache, up to 1 GiB.
func qemuOverheadMiB(accel string) int {
	if accel == AccelTCG {
		return 256 + 1024
	}
	return 256
}

// seccompFlags is QEMU's -sandbox value: the seccomp filter QEMU loads
// before it runs the guest (it always denies mount, reboot, swap, kexec,
// module and syslog calls). Each "deny" has a cost; whoever needs one of
// these features changes it here, in one place:
//
//   - obsolete=deny: obsolete system calls (sysfs, uselib, ustat, ...):
//     nothing QEMU 7.2 uses.
//   - elevateprivileges: deny forbids set*uid/set*gid/setsid/setpgid. QEMU
//     7.2 loads the filter before it applies -runas, so a jail that drops
//     privileges must allow them (QEMU dies of SIGSYS in setgid
//     otherwise); once dropped, QEMU has no capabilities and no_new_privs,
//     so those calls cannot raise it again.
//   - spawn=deny: fork and execve: no exec: migration URIs (-incoming
//     exec:..., QMP migrate exec:...), no -netdev tap/bridge helper
//     scripts, no smb= on user networking. Hand QEMU an fd instead, as
//     templates do (qmpRun: getfd, then migrate or migrate-incoming
//     fd:NAME). Under the root-host chroot there is no shell to exec anyway.
//   - resourcecontrol=deny: scheduler and priority calls (sched_setaffinity,
//     setpriority, ...): no vCPU pinning, no preallocation thread
//     contexts, no real-time scheduling.
func seccompFlags(dropsPrivileges bool) string {
	elevate := "deny"
	if dropsPrivileges {
		elevate = "allow"
	}
	return "on,obsolete=deny,elevateprivileges=" + elevate + ",spawn=deny,resourcecontrol=deny"
}

// newJail prepares the confinement of the QEMU of the box spec on this
// host: on a root host its ids, its box dir and its control group.
func newJail(spec backend.Spec, accel string, cpus, memMiB int) (*jail, error) {
	if os.Geteuid() != 0 {
		return &jail{Seccomp: seccompFlags(false)}, nil
	}
	sl, _, err := hostid.Alloc(spec.Dir)
	if err != nil {
		return nil, err
	}
	j := &jail{
		Seccomp: seccompFlags(true), UID: int(sl.UID), GID: int(sl.GID), Root: spec.Dir,
		IDs: fmt.Sprintf("slice %d of the %s", sl.Index, sl.Source),
	}
	if err := os.Chmod(spec.Dir, 0o711); err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "qemu: box dir")
	}
	if err := os.Chown(filepath.Join(spec.Dir, "disk.qcow2"), j.UID, j.GID); err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "qemu: box disk")
	}
	lim := cgroup.Limits{CPUs: cpus, MemoryMiB: memMiB + qemuOverheadMiB(accel), Pids: qemuPidsLimit}
	if accel == AccelTCG {
		lim.CPUs = 0 // an emulated guest's clock falls behind when QEMU is throttled
	}
	j.cg = cgroup.New(spec.ID, lim)
	j.cg.CloseFD() // QEMU joins after it starts (spawn forks it)
	j.Cgroup, j.CgroupV1, j.Limits = j.cg.Path, j.cg.V1Dirs(), j.cg.Describe(lim)
	if lim.CPUs == 0 {
		j.Limits["cpus"] = fmt.Sprintf("%d vCPUs, no CPU time limit under TCG (throttling the emulator puts the guest's clock behind)", cpus)
	}
	if lim.MemoryMiB > 0 {
		j.Limits["memory"] += fmt.Sprintf(" (guest %d MiB + QEMU %d MiB)", memMiB, lim.MemoryMiB-memMiB)
	}
	return j, nil
}

// drops says whether QEMU changes ids (a root host).
func (j *jail) drops() bool { return j.UID != 0 }

// args are QEMU's arguments for the jail.
func (j *jail) args() []string {
	a := []string{"-sandbox", j.Seccomp}
	if j.drops() {
		a = append(a, "-runas", fmt.Sprintf("%d:%d", j.UID, j.GID), "-chroot", qemuPath(j.Root))
	}
	return a
}

// command is what spawn runs for QEMU with args (the box's, which a
// template records) and the jail's: QEMU itself, or on a root host QEMU as
// the child of the init of a new pid namespace (see above).
//
// Under the chroot, paths in the box dir are given relative to it, and
// QEMU starts in it: they name the same files before the chroot and
// after, when QEMU reopens its disk (a migration ends by reopening it
// read-only; a snapshot opens a new overlay).
func (j *jail) command(qemuBin string, args []string) (string, []string, error) {
	if !j.drops() {
		return qemuBin, append(j.args(), args...), nil
	}
	unshare, err := vmboot.LookTool("unshare", "util-linux")
	if err != nil {
		return "", nil, err
	}
	cmd := []string{"--wd", j.Root, "--pid", "--fork", "--kill-child", "--", "/bin/sh", "-c", `"$@" & wait $!`, "sh", qemuBin}
	cmd = append(cmd, j.args()...)
	for _, a := range args {
		cmd = append(cmd, strings.ReplaceAll(a, qemuPath(j.Root)+"/", ""))
	}
	return unshare, cmd, nil
}

// path is how QEMU names hostPath, a file of the box dir: relative to
// the box dir under the chroot.
func (j *jail) path(hostPath string) string {
	if j == nil || !j.drops() {
		return hostPath
	}
	return strings.TrimPrefix(hostPath, j.Root+"/")
}

// own gives a file QEMU opens for writing after the drop (a snapshot's
// new overlay) to the box uid.
func (j *jail) own(hostPath string) error {
	if j == nil || !j.drops() {
		return nil
	}
	if err := os.Chown(hostPath, j.UID, j.GID); err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "qemu: give %s to the box uid", hostPath)
	}
	return nil
}

// join puts a started helper or QEMU (pid) into the jail's groups.
func (j *jail) join(pid int) {
	if j != nil && j.cg != nil {
		j.cg.Join(pid)
	}
}

// started records QEMU's pid once it runs: under a root host's pid
// namespace init, it is the grandchild of the launched process.
func (j *jail) started(ctx context.Context, launched *proc) error {
	if !j.drops() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, startWait)
	defer cancel()
	for {
		if init := childPID(launched.pid); init > 0 {
			if q := childPID(init); q > 0 {
				st, err := backend.ProcStartTime(q)
				if err != nil {
					return errdefs.Wrap(errdefs.Unavailable, err, "qemu: pid %d under %d", q, launched.pid)
				}
				j.QEMUPID, j.qemuStart = q, st
				j.Launched, j.LaunchedStart = launched.pid, launched.startTime
				j.join(q)
				return nil
			}
		}
		if launched.exited() {
			return errdefs.New(errdefs.Unavailable, "qemu: its pid namespace ended at start (%s)", launched.exitString())
		}
		if err := vmboot.SleepCtx(ctx, 5*time.Millisecond); err != nil {
			return errdefs.Wrap(errdefs.CodeOf(err), err, "qemu: finding its pid under %d", launched.pid)
		}
	}
}

// childPID is the first child of pid, or 0.
func childPID(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

// attached is the jail of a box started by an earlier process, whose QEMU
// is st.
func (j *jail) attached(st state) *jail {
	if j != nil && j.Launched > 0 {
		j.QEMUPID, j.qemuStart = st.PID, st.StartTime
	}
	if j != nil && (j.Cgroup != "" || len(j.CgroupV1) > 0) {
		j.cg = cgroup.Attach(j.Cgroup, j.CgroupV1)
	}
	return j
}

// watched is the pid and start time of the process Attach watches.
func (st state) watched() (int, uint64) {
	if st.Jail != nil && st.Jail.Launched > 0 {
		return st.Jail.Launched, st.Jail.LaunchedStart
	}
	return st.PID, st.StartTime
}

// release removes the control group once QEMU and its helpers are gone.
func (j *jail) release() {
	if j != nil && j.cg != nil {
		j.cg.Remove()
	}
}

// info says what confines QEMU (box info).
func (j *jail) info() map[string]any {
	if j == nil {
		return nil
	}
	m := map[string]any{"seccomp": "-sandbox " + j.Seccomp}
	if !j.drops() {
		m["user"] = fmt.Sprintf("the calling user (uid %d): not root, nothing to drop", os.Geteuid())
		m["root"] = "the host's /"
		return m
	}
	m["user"] = fmt.Sprintf("uid %d gid %d, no capabilities (%s)", j.UID, j.GID, j.IDs)
	m["root"] = j.Root + " (chroot, pid namespace)"
	m["limits"] = j.Limits
	return m
}
