package agent

import (
	"bufio"
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/agentpb"
	"github.com/libbox/libbox/internal/procstat"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on Linux).
const clockTicks = 100

// boxProcs returns the agent's descendants: every process of the box.
func boxProcs() []procstat.Stat {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]procstat.Stat{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := procstat.Read(pid)
		if err != nil || st.Flags&procstat.PFKthread != 0 {
			continue
		}
		children[st.Ppid] = append(children[st.Ppid], st)
	}
	var out []procstat.Stat
	stack := []int{os.Getpid()}
	for len(stack) > 0 {
		pid := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, c := range children[pid] {
			out = append(out, c)
			stack = append(stack, c.Pid)
		}
	}
	return out
}

// meminfo returns MemTotal and MemAvailable in bytes.
func meminfo() (total, avail uint64) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "MemTotal":
			total = n * 1024
		case "MemAvailable":
			avail = n * 1024
		}
	}
	return total, avail
}

// netBytes sums the received and sent bytes of every interface but lo.
func netBytes() (rx, tx uint64) {
	data, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) == "lo" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 9 {
			continue
		}
		r, _ := strconv.ParseUint(f[0], 10, 64)
		t, _ := strconv.ParseUint(f[8], 10, 64)
		rx += r
		tx += t
	}
	return rx, tx
}

// ownsMemory reports whether the kernel the agent sees belongs to the box
// (a VM); in a sandbox the kernel's memory figures are the host's.
func (a *Agent) ownsMemory() bool { return a.opts.PID1 && a.root != "/" }

// Stats reports resource use as seen inside the box.
func (a *Agent) Stats(ctx context.Context, _ *agentpb.StatsRequest) (*agentpb.StatsResponse, error) {
	procs := boxProcs()
	var self procstat.Stat
	self, _ = procstat.Read(os.Getpid())
	ticks := self.Utime + self.Stime + self.Cutime + self.Cstime
	rss := self.RSSPages // the agent is part of what the box uses
	for _, p := range procs {
		ticks += p.Utime + p.Stime
		rss += p.RSSPages
	}
	total, avail := meminfo()
	used := uint64(rss) * uint64(os.Getpagesize())
	if a.ownsMemory() && total >= avail {
		used = total - avail
	}
	rx, tx := netBytes()
	return &agentpb.StatsResponse{
		MemTotalBytes: total,
		MemUsedBytes:  used,
		Processes:     int32(len(procs)),
		ExecsRunning:  int32(a.sp.Running()),
		ExecsServed:   a.execsServed.Load(),
		NetRxBytes:    rx,
		NetTxBytes:    tx,
		CpuNanos:      int64(ticks) * int64(time.Second/clockTicks),
		UptimeNanos:   int64(time.Since(a.startedAt)),
	}, nil
}

// bootTime is the wall-clock time the kernel's tick counts start at.
func bootTime() time.Time {
	data, _ := os.ReadFile("/proc/stat")
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return time.Unix(n, 0)
		}
	}
	return time.Time{}
}

// Processes lists the running processes started by Exec.
func (a *Agent) Processes(ctx context.Context, _ *agentpb.ProcessesRequest) (*agentpb.ProcessesResponse, error) {
	boot := bootTime()
	passwd := readColonFile(a.root, "/etc/passwd")
	resp := &agentpb.ProcessesResponse{}
	for _, pid := range a.sp.Pids() {
		st, err := procstat.Read(pid)
		if err != nil {
			continue // exited meanwhile
		}
		args := procArgs(pid)
		var sys syscall.Stat_t
		uid := uint32(0)
		if syscall.Stat("/proc/"+strconv.Itoa(pid), &sys) == nil {
			uid = sys.Uid
		}
		name := ""
		for _, f := range passwd {
			if len(f) >= 3 && f[2] == strconv.Itoa(int(uid)) {
				name = f[0]
				break
			}
		}
		started := boot.Add(time.Duration(st.StartTicks) * (time.Second / clockTicks))
		resp.Processes = append(resp.Processes, &agentpb.ProcessInfo{
			Pid: int32(pid), Args: args, Uid: uid, User: name,
			StartedUnixNanos: started.UnixNano(), Tty: st.TtyNr != 0,
		})
	}
	return resp, nil
}

// procArgs is pid's command line. A process caught inside execve (its new
// memory in place, its arguments not yet: the moment a vfork spawner's
// parent resumes and reports the exec started) shows an empty one for a
// moment; that is waited out, briefly. Zombies and kernel threads have none.
func procArgs(pid int) []string {
	for try := 0; ; try++ {
		cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if len(cmdline) > 0 {
			return strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		}
		st, err := procstat.Read(pid)
		if try == 50 || err != nil || st.State == 'Z' || st.Flags&procstat.PFKthread != 0 {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
}

// Kill signals a process started by Exec or one of its descendants; any
// other pid of the box (the agent itself included) is NotFound.
func (a *Agent) Kill(ctx context.Context, req *agentpb.KillRequest) (*agentpb.KillResponse, error) {
	pid, sig := int(req.GetPid()), syscall.Signal(req.GetSignal())
	if sig == 0 {
		sig = syscall.SIGKILL
	}
	if sig < 0 || sig > 64 {
		return nil, errdefs.New(errdefs.InvalidArgument, "kill %d: no signal %d", pid, req.GetSignal())
	}
	if pid <= 0 || !a.isExecDescendant(pid) {
		return nil, errdefs.New(errdefs.NotFound, "no process %d started by exec runs in the box", pid)
	}
	if err := unix.Kill(pid, sig); err != nil {
		if err == unix.ESRCH {
			return nil, errdefs.New(errdefs.NotFound, "process %d exited", pid)
		}
		return nil, errdefs.Wrap(errdefs.Internal, err, "kill %d", pid)
	}
	return &agentpb.KillResponse{}, nil
}

// isExecDescendant reports whether pid is a process started by Exec or
// below one.
func (a *Agent) isExecDescendant(pid int) bool {
	execs := map[int]bool{}
	for _, p := range a.sp.Pids() {
		execs[p] = true
	}
	self := os.Getpid()
	for i := 0; i < 4096 && pid > 1 && pid != self; i++ {
		if execs[pid] {
			return true
		}
		st, err := procstat.Read(pid)
		if err != nil {
			return false
		}
		pid = st.Ppid
	}
	return false
}
