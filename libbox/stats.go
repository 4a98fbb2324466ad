package libbox

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/agentpb"
	"github.com/libbox/libbox/internal/procstat"
)

// BootStage is one step of the last start, as the host timed it.
type BootStage struct {
	Name     string        `json:"name"` // "prepare" (image, agent), "launch" (backend), "agent" (until it answers), "identify" (a restored VM)
	Duration time.Duration `json:"duration_ns"`
}

// Stats is a box's resource use at one moment.
type Stats struct {
	Time time.Time `json:"time"`
	// CPUTime is the host CPU time the box used: QEMU's for a VM, the
	// sandbox's processes' (its cgroup's when it has one) for a sandbox.
	CPUTime time.Duration `json:"cpu_time_ns"`
	// CPUPercent is the CPU use since the previous Stats of this Box (since
	// the start for the first): 100 is one core busy.
	CPUPercent float64 `json:"cpu_percent"`
	// GuestCPUTime is the CPU time of the box's processes as the box sees it.
	GuestCPUTime time.Duration `json:"guest_cpu_time_ns"`
	// MemoryTotal is what the box can use: the VM's RAM, a sandbox's
	// cgroup limit, else the host's RAM. MemoryUsed is in use inside the
	// box: the guest's used memory for a VM, the processes' (cgroup's) for
	// a sandbox.
	MemoryTotal uint64 `json:"memory_total"`
	MemoryUsed  uint64 `json:"memory_used"`
	// HostRSS is the host memory the box holds: QEMU's resident set, or the
	// sandbox's processes' (its cgroup's memory.current when it has one).
	HostRSS uint64 `json:"host_rss"`
	// DiskBytes is the space of the box's own layer (qcow2 overlay or
	// upper directory), not the shared image.
	DiskBytes uint64 `json:"disk_bytes"`
	// Processes counts the processes in the box (the agent excluded).
	Processes    int    `json:"processes"`
	ExecsRunning int    `json:"execs_running"`
	ExecsServed  uint64 `json:"execs_served"` // since the agent started
	// Network bytes of the box's interfaces (lo excluded); 0 without networking.
	Network    bool          `json:"network"`
	NetRxBytes uint64        `json:"net_rx_bytes"`
	NetTxBytes uint64        `json:"net_tx_bytes"`
	Uptime     time.Duration `json:"uptime_ns"`
	// Boot is the stage timings of the last start by this Runtime (empty
	// for a detached box this Runtime attached to).
	Boot []BootStage `json:"boot,omitempty"`
}

// cpuSample is a previous CPU reading, for CPUPercent.
type cpuSample struct {
	at  time.Time
	cpu time.Duration
}

// Stats samples the running box's resource use.
func (b *Box) Stats(ctx context.Context) (Stats, error) {
	client, err := b.agentClient()
	if err != nil {
		return Stats{}, err
	}
	in, err := client.Stats(ctx, &agentpb.StatsRequest{})
	if err != nil {
		return Stats{}, b.execError(ctx, err)
	}
	b.mu.Lock()
	inst := b.inst
	boot := append([]BootStage(nil), b.boot...)
	started := b.st.StartedAt
	b.mu.Unlock()
	if inst == nil {
		return Stats{}, errdefs.New(errdefs.FailedPrecondition, "box %s is not running", b.cfg.ID)
	}
	s := Stats{
		Time: time.Now(), GuestCPUTime: time.Duration(in.GetCpuNanos()),
		MemoryTotal: in.GetMemTotalBytes(), MemoryUsed: in.GetMemUsedBytes(),
		Processes: int(in.GetProcesses()), ExecsRunning: int(in.GetExecsRunning()), ExecsServed: in.GetExecsServed(),
		Network: b.cfg.Network.Enabled, NetRxBytes: in.GetNetRxBytes(), NetTxBytes: in.GetNetTxBytes(),
		Uptime: time.Duration(in.GetUptimeNanos()), Boot: boot,
	}
	var st struct {
		Pid    int    `json:"pid"`
		Cgroup string `json:"cgroup"`
	}
	_ = json.Unmarshal(inst.State(), &st)
	vm := b.cfg.Isolation == IsolationVM
	if cg := st.Cgroup; !vm && cg != "" && fileExists(filepath.Join(cg, "memory.current")) {
		s.HostRSS = readUint(filepath.Join(cg, "memory.current"))
		s.MemoryUsed = s.HostRSS
		if limit := readUint(filepath.Join(cg, "memory.max")); limit > 0 {
			s.MemoryTotal = limit
		}
		s.CPUTime = time.Duration(cgroupCPUUsec(cg)) * time.Microsecond
	} else if st.Pid > 0 {
		rss, cpu := procTreeUsage(st.Pid, !vm)
		s.HostRSS, s.CPUTime = rss, cpu
	}
	s.DiskBytes = layerBytes(b.dir)
	b.mu.Lock()
	prev := b.lastCPU
	if prev.at.IsZero() {
		prev = cpuSample{at: started}
	}
	if wall := s.Time.Sub(prev.at); wall > 0 && s.CPUTime >= prev.cpu {
		s.CPUPercent = 100 * float64(s.CPUTime-prev.cpu) / float64(wall)
	}
	b.lastCPU = cpuSample{at: s.Time, cpu: s.CPUTime}
	b.mu.Unlock()
	return s, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// readUint reads a file holding one number ("max" reads as 0).
func readUint(p string) uint64 {
	data, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	return n
}

func cgroupCPUUsec(cg string) uint64 {
	data, err := os.ReadFile(filepath.Join(cg, "cpu.stat"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			n, _ := strconv.ParseUint(v, 10, 64)
			return n
		}
	}
	return 0
}

// hostProc is the part of a host /proc/<pid> entry stats need.
type hostProc struct {
	ppid       int
	ticks      uint64 // utime + stime
	childTicks uint64 // cutime + cstime (reaped children)
	rssBytes   uint64
}

func readHostProc(pid int) (hostProc, bool) {
	st, err := procstat.Read(pid)
	if err != nil {
		return hostProc{}, false
	}
	return hostProc{
		ppid: st.Ppid, ticks: st.Utime + st.Stime, childTicks: st.Cutime + st.Cstime,
		rssBytes: uint64(max(st.RSSPages, 0)) * uint64(os.Getpagesize()),
	}, true
}

// procTreeUsage sums the resident memory and CPU time of pid and, with
// tree, all its descendants (and the children they reaped).
func procTreeUsage(pid int, tree bool) (rss uint64, cpu time.Duration) {
	const tick = time.Second / 100
	root, ok := readHostProc(pid)
	if !ok {
		return 0, 0
	}
	rss, ticks := root.rssBytes, root.ticks
	if !tree {
		return rss, time.Duration(ticks) * tick
	}
	ticks += root.childTicks
	ents, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	procs := map[int]hostProc{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if hp, ok := readHostProc(p); ok {
			children[hp.ppid] = append(children[hp.ppid], p)
			procs[p] = hp
		}
	}
	stack := []int{pid}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, c := range children[p] {
			hp := procs[c]
			rss += hp.rssBytes
			ticks += hp.ticks
			stack = append(stack, c)
		}
	}
	return rss, time.Duration(ticks) * tick
}

// layerBytes is the space of a box's own layer in its directory: the
// qcow2 overlay of a VM, the upper directory of a sandbox.
func layerBytes(dir string) uint64 {
	var st syscall.Stat_t
	if syscall.Stat(filepath.Join(dir, "disk.qcow2"), &st) == nil {
		return uint64(st.Blocks) * 512
	}
	return uint64(diskUsage(filepath.Join(dir, "upper")))
}

// ProcessInfo is one running exec of a box.
type ProcessInfo struct {
	Pid     int       `json:"pid"` // in the box
	Args    []string  `json:"args"`
	UID     uint32    `json:"uid"`
	User    string    `json:"user,omitempty"`
	Started time.Time `json:"started"`
	TTY     bool      `json:"tty"`
}

// Processes lists the execs running in the box, also those another host
// process started (a detached box).
func (b *Box) Processes(ctx context.Context) ([]ProcessInfo, error) {
	client, err := b.agentClient()
	if err != nil {
		return nil, err
	}
	resp, err := client.Processes(ctx, &agentpb.ProcessesRequest{})
	if err != nil {
		return nil, b.execError(ctx, err)
	}
	out := make([]ProcessInfo, 0, len(resp.GetProcesses()))
	for _, p := range resp.GetProcesses() {
		out = append(out, ProcessInfo{
			Pid: int(p.GetPid()), Args: p.GetArgs(), UID: p.GetUid(), User: p.GetUser(),
			Started: time.Unix(0, p.GetStartedUnixNanos()).UTC(), TTY: p.GetTty(),
		})
	}
	return out, nil
}

// KillProcess signals (sig 0: SIGKILL) a process of the box started by an
// exec, or one of its descendants; another pid is ErrNotFound.
func (b *Box) KillProcess(ctx context.Context, pid int, sig syscall.Signal) error {
	client, err := b.agentClient()
	if err != nil {
		return err
	}
	if _, err := client.Kill(ctx, &agentpb.KillRequest{Pid: int32(pid), Signal: int32(sig)}); err != nil {
		return b.execError(ctx, err)
	}
	return nil
}
