// Command libbox-bench measures libbox side by side with its physical
// floor (fork/exec on the host) and writes bench/out/results.json as
// {"metrics": {...}, "info": {...}}; with -stress it runs the long stress
// and writes bench/out/stress.json. Numbers are reported, never asserted.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/libbox/libbox/guest/agentpb"
	"github.com/libbox/libbox/internal/procstat"
	"github.com/libbox/libbox/libbox"
	"github.com/libbox/libbox/libbox/qemu"
)

type results struct {
	Metrics map[string]float64 `json:"metrics"`
	Info    map[string]string  `json:"info"`
	// Ratios are measured once per round from interleaved runs (see ratio).
	Ratios map[string]ratio `json:"ratios"`
	// Stages are breakdowns ("start.sandbox", "exec.sandbox"): stage name
	// to its median duration in µs.
	Stages map[string]map[string]float64 `json:"stages"`
}

func main() {
	defer func() { os.Exit(exitCode) }()
	out := flag.String("out", "bench/out/results.json", "output JSON file")
	stress := flag.Bool("stress", false, "run the stress instead of the benchmarks")
	n := flag.Int("n", 10000, "stress: number of execs")
	isolations := flag.String("isolation", "sandbox,vm", "comma-separated backends to measure/stress (sandbox,vm)")
	rounds := flag.Int("rounds", 3, "rounds per ratio (each round interleaves the pair it compares)")
	onlyList := flag.String("only", "", "comma-separated benchmarks to run (default: all): "+strings.Join(benchNames(), ","))
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of this process (the host side) to this file")
	serveGo := flag.Bool("serve-go-execs", false, "for the binding benches: run `true` execs through the Go API on request (see serveGoExecs)")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "libbox-bench: -cpuprofile:", err)
			os.Exit(2)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	only := map[string]bool{}
	for _, n := range strings.Split(*onlyList, ",") {
		if n != "" {
			only[n] = true
		}
	}
	if *rounds < 1 {
		fmt.Fprintln(os.Stderr, "libbox-bench: -rounds must be at least 1")
		os.Exit(2)
	}
	var err error
	if *serveGo {
		if err := serveGoExecs(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "libbox-bench -serve-go-execs:", err)
			os.Exit(1)
		}
		return
	}
	if *stress {
		err = runStress(*out, *n, strings.Split(*isolations, ","))
	} else {
		err = runBench(*out, strings.Split(*isolations, ","), *rounds, only)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "libbox-bench:", err)
		exitCode = 1
	}
}

// exitCode is set by main's body; deferred work (the profile) runs first.
var exitCode int

func pct(d []time.Duration, p float64) float64 {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p)
	return float64(s[i].Microseconds())
}

// sequential times fn n times after warm-up runs.
func sequential(n, warm int, fn func() error) ([]time.Duration, error) {
	for i := 0; i < warm; i++ {
		if err := fn(); err != nil {
			return nil, err
		}
	}
	d := make([]time.Duration, n)
	for i := range d {
		t := time.Now()
		if err := fn(); err != nil {
			return nil, err
		}
		d[i] = time.Since(t)
	}
	return d, nil
}

// concurrent runs total calls of fn from c callers; returns calls/s.
func concurrent(total, c int, fn func() error) (float64, error) {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	t := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(total) {
				if err := fn(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(total) / time.Since(t).Seconds(), nil
}

func native() error { return exec.Command("/bin/true").Run() }

func exeDir() string {
	p, _ := os.Executable()
	return filepath.Dir(p)
}

// agentProc is box-agent running as a plain process on a unix socket.
type agentProc struct {
	cmd    *exec.Cmd
	wait   func() error // cmd.Wait, through startOwned
	conn   *grpc.ClientConn
	client agentpb.AgentClient
	dir    string
}

func startAgent() (*agentProc, error) {
	bin := os.Getenv("LIBBOX_AGENT")
	if bin == "" {
		bin = filepath.Join(exeDir(), "box-agent")
	}
	dir, err := os.MkdirTemp("", "libbox-bench-agent-")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "agent.sock")
	cmd := exec.Command(bin, "--listen", "unix:"+sock)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	wait, err := startOwned(cmd)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	conn, err := grpc.NewClient("unix://"+sock, append(agentpb.ClientOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		return nil, err
	}
	a := &agentProc{cmd: cmd, wait: wait, conn: conn, client: agentpb.NewAgentClient(conn), dir: dir}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.client.Ping(ctx, &agentpb.PingRequest{}, grpc.WaitForReady(true)); err != nil {
		a.close()
		return nil, err
	}
	return a, nil
}

func (a *agentProc) exec(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := a.client.Exec(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&agentpb.ExecRequest{Msg: &agentpb.ExecRequest_Start{Start: &agentpb.ExecStart{Args: args}}}); err != nil {
		return err
	}
	for {
		ev, err := st.Recv()
		if err != nil {
			return err
		}
		if ex := ev.GetExit(); ex != nil {
			if ex.Status != agentpb.Exit_EXITED || ex.ExitCode != 0 {
				return fmt.Errorf("exec %v: %v", args, ex)
			}
			for {
				if _, err := st.Recv(); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return nil
				}
			}
		}
	}
}

// startOwned starts cmd (whose Pdeathsig is set) from an OS thread kept
// for it until it was waited for, and returns its Wait. The kernel sends
// Pdeathsig when the thread that forked the child exits, and Go ends threads
// (a box start locks one into the box's mount namespace and lets it go):
// the bench's agent was killed that way in the middle of a run.
func startOwned(cmd *exec.Cmd) (wait func() error, err error) {
	started, waited := make(chan error, 1), make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		waited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return sync.OnceValue(func() error { return <-waited }), nil
}

func (a *agentProc) rssKB() float64 { return rssKB(a.cmd.Process.Pid) }

func rssKB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	return 0
}

func (a *agentProc) close() {
	a.conn.Close()
	a.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { a.wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		a.cmd.Process.Kill()
		<-done
	}
	os.RemoveAll(a.dir)
}

func runOne(b *libbox.Box, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := b.Run(ctx, libbox.Command{Args: args})
	if err != nil {
		return err
	}
	if r.ExitCode != 0 {
		return fmt.Errorf("%v: exit %d", args, r.ExitCode)
	}
	return nil
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func runBench(out string, isolations []string, rounds int, only map[string]bool) error {
	res := results{Metrics: map[string]float64{}, Info: map[string]string{}, Ratios: map[string]ratio{}, Stages: map[string]map[string]float64{}}
	res.Info["host.cpus"] = strconv.Itoa(runtime.NumCPU())
	res.Info["date"] = time.Now().UTC().Format(time.RFC3339)
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		res.Info["host.loadavg_at_start"] = strings.TrimSpace(string(b))
	}
	for name := range only {
		if !slices.Contains(benchNames(), name) {
			return fmt.Errorf("-only %s: no such benchmark (have %s)", name, strings.Join(benchNames(), ","))
		}
	}
	rt, home, done, err := openRuntime("libbox-bench-")
	if err != nil {
		return err
	}
	defer done()
	e := &env{rt: rt, home: home, isolations: isolations, rounds: rounds, res: &res}
	runRegistered(context.Background(), e, only)
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		res.Info["host.loadavg_at_end"] = strings.TrimSpace(string(b))
	}
	return write(out, &res)
}

// openRuntime opens a runtime on a fresh temp home; done closes it and
// removes the home. VM templates are off in it: its VM starts are boots,
// and no background template build competes with what is measured
// (vm_restore opens its own runtime).
func openRuntime(prefix string) (*libbox.Runtime, string, func(), error) {
	home, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, "", nil, err
	}
	rt, err := libbox.Open(libbox.Options{Home: home, NoVMTemplates: true})
	if err != nil {
		os.RemoveAll(home)
		return nil, "", nil, err
	}
	return rt, home, func() { rt.Close(); os.RemoveAll(home) }, nil
}

func init() {
	register("exec", benchExec)
	register("start", benchStart)
	register("cabi", benchCABI)
	register("vm", benchVMExtras)
}

// cpuPerCall runs fn n times and returns the CPU time per call in µs:
// this process and its reaped children, plus process pid and its reaped
// children when pid > 0 (from /proc, in clock ticks).
func cpuPerCall(n int, fn func() error, pid int) (float64, error) {
	c0, p0 := cpuTime(), procCPU(pid)
	for i := 0; i < n; i++ {
		if err := fn(); err != nil {
			return 0, err
		}
	}
	d := cpuTime() - c0 + procCPU(pid) - p0
	return float64(d.Nanoseconds()) / 1000 / float64(n), nil
}

// procCPU is utime+stime+cutime+cstime of pid (0 for pid <= 0).
func procCPU(pid int) time.Duration {
	u, sys := procCPUSplit(pid)
	return u + sys
}

// procCPUSplit is the user (utime+cutime) and system (stime+cstime) time
// of pid, from /proc in clock ticks.
func procCPUSplit(pid int) (user, system time.Duration) {
	if pid <= 0 {
		return 0, 0
	}
	st, err := procstat.Read(pid)
	if err != nil {
		return 0, 0
	}
	tick := func(n uint64) time.Duration { return time.Duration(n) * time.Second / 100 } // USER_HZ
	return tick(st.Utime + st.Cutime), tick(st.Stime + st.Cstime)
}

// target is 1.5 × native + 300 µs: what an exec through a box may cost.
func execBudget(nativeUs float64) float64 { return 1.5*nativeUs + 300 }

// benchExec measures exec latency of the agent (a plain process on a unix
// socket) and of each backend against native fork/exec, interleaved, and
// throughput at 64 concurrent callers.
func benchExec(ctx context.Context, e *env) error {
	m := func(name string, v float64) { e.metric(name, v) }
	a, err := startAgent()
	if err != nil {
		return err
	}
	defer a.close()
	var boxes = map[string]*libbox.Box{}
	for _, iso := range e.isolations {
		b, done, err := e.box(ctx, libbox.BoxOptions{Isolation: iso})
		if err != nil {
			e.info("error.exec."+iso, err.Error())
			continue
		}
		defer done()
		boxes[iso] = b
	}
	type subject struct {
		name string
		n    int
		fn   func() error
		pid  int // the process serving it (agent, sandbox agent, QEMU)
	}
	subjects := []subject{{"agent", 150, func() error { return a.exec("/bin/true") }, a.cmd.Process.Pid}}
	for _, iso := range e.isolations {
		if b := boxes[iso]; b != nil {
			n := 150
			if iso == libbox.IsolationVM {
				n = 40
			}
			pid, _ := b.Info().Backend["pid"].(int)
			subjects = append(subjects, subject{iso, n, func() error { return runOne(b, "true") }, pid})
		}
	}
	for _, s := range subjects {
		var allN, allS []time.Duration
		var perRound []float64
		for r := 0; r < e.rounds; r++ {
			dn, ds, err := pairs(s.n, 20, native, s.fn)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			allN, allS = append(allN, dn...), append(allS, ds...)
			perRound = append(perRound, pct(ds, 0.5)/execBudget(pct(dn, 0.5)))
		}
		m("exec."+s.name+".p50_us", pct(allS, 0.5))
		m("exec."+s.name+".p99_us", pct(allS, 0.99))
		m("exec.native_vs_"+s.name+".p50_us", pct(allN, 0.5))
		e.ratioAtMost(s.name+" exec p50 / (1.5 x native + 300us)", 1.0, perRound)

		// CPU time per exec (this process plus the serving process and
		// what it reaped), in alternating blocks: meaningful on a loaded
		// machine, where wall time is mostly waiting for a core.
		perRound = perRound[:0]
		var cpuN, cpuS []float64
		for r := 0; r < e.rounds; r++ {
			cn, err := cpuPerCall(100, native, 0)
			if err != nil {
				return err
			}
			cs, err := cpuPerCall(100, s.fn, s.pid)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			cpuN, cpuS = append(cpuN, cn), append(cpuS, cs)
			perRound = append(perRound, cs/execBudget(cn))
		}
		m("exec."+s.name+".cpu_us", median(cpuS))
		m("exec.native_vs_"+s.name+".cpu_us", median(cpuN))
		e.ratioAtMost(s.name+" exec CPU / (1.5 x native CPU + 300us)", 1.0, perRound)
	}
	// Native floor on its own (the reference of the older metrics).
	d, err := sequential(300, 20, native)
	if err != nil {
		return err
	}
	m("exec.native.p50_us", pct(d, 0.5))
	m("exec.native.p99_us", pct(d, 0.99))
	// Throughput at 64 callers, native and each subject alternately.
	for _, s := range subjects {
		total := 600
		if s.name == libbox.IsolationVM {
			total = 200
		}
		var perRound, thrN, thrS []float64
		for r := 0; r < e.rounds; r++ {
			n, err := concurrent(total, 64, native)
			if err != nil {
				return err
			}
			x, err := concurrent(total, 64, s.fn)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			thrN, thrS = append(thrN, n), append(thrS, x)
			perRound = append(perRound, x/n)
		}
		m("throughput."+s.name+".n64_per_s", median(thrS))
		m("throughput.native_vs_"+s.name+".n64_per_s", median(thrN))
		e.ratioAtLeast(s.name+" throughput n64 / native", 0.5, perRound)
	}
	m("throughput.native.n64_per_s", e.res.Metrics["throughput.native_vs_agent.n64_per_s"])
	if b := boxes[libbox.IsolationSandbox]; b != nil {
		// The Go API doing what the Python and Node benches do.
		t := time.Now()
		if _, err := concurrent(1000, 64, func() error { return runOne(b, "true") }); err != nil {
			return err
		}
		m("binding.go.1000_ms", float64(time.Since(t).Microseconds())/1000)
	}
	// RSS right after the throughput run, and once the agent has been
	// idle for 2 s (it returns free memory after 1 s without processes).
	m("mem.agent.rss_busy_kb", a.rssKB())
	time.Sleep(2 * time.Second)
	m("mem.agent.rss_kb", a.rssKB())
	return nil
}

// benchStart measures create + start + first exec of a sandbox box against
// `bwrap true` in the same image, interleaved, and of a VM box.
func benchStart(ctx context.Context, e *env) error {
	startOnce := func(iso string) (float64, error) { return startFirstExec(ctx, e, iso) }
	if e.has(libbox.IsolationSandbox) {
		if _, err := startOnce(libbox.IsolationSandbox); err != nil { // installs the image
			return err
		}
		bw, err := bwrapCmd(ctx, e.rt)
		if err != nil {
			e.info("error.bwrap", err.Error())
		} else {
			var perRound, cpuRound, allS, allB, cpuS, cpuB []float64
			for r := 0; r < e.rounds; r++ {
				var ss, bs, cs, cb []float64
				for i := 0; i < 6; i++ {
					c0, t := cpuTimeAll(), time.Now()
					if out, err := bw().CombinedOutput(); err != nil {
						return fmt.Errorf("bwrap: %v: %s", err, out)
					}
					bms, bcpu := float64(time.Since(t).Microseconds())/1000, cpuTimeAll()-c0
					c0 = cpuTimeAll()
					sms, err := startOnce(libbox.IsolationSandbox)
					if err != nil {
						return err
					}
					scpu := cpuTimeAll() - c0
					if i > 0 { // the first pair warms caches
						ss, bs = append(ss, sms), append(bs, bms)
						cs, cb = append(cs, float64(scpu.Microseconds())/1000), append(cb, float64(bcpu.Microseconds())/1000)
					}
				}
				allS, allB = append(allS, ss...), append(allB, bs...)
				cpuS, cpuB = append(cpuS, cs...), append(cpuB, cb...)
				perRound = append(perRound, median(ss)/median(bs))
				cpuRound = append(cpuRound, median(cs)/median(cb))
			}
			e.metric("start.sandbox.first_exec_ms", median(allS))
			e.metric("start.bwrap.ms", median(allB))
			e.metric("start.sandbox.cpu_ms", median(cpuS))
			e.metric("start.bwrap.cpu_ms", median(cpuB))
			e.ratioAtMost("sandbox create->first exec / bwrap true", 1.2, perRound)
			e.ratioAtMost("sandbox start CPU / bwrap true CPU", 1.2, cpuRound)
		}
	}
	return nil
}

// startFirstExec times create + start + first exec of a box (ms), then
// removes it.
func startFirstExec(ctx context.Context, e *env, iso string) (float64, error) {
	t := time.Now()
	b, err := e.rt.Create(ctx, libbox.BoxOptions{Isolation: iso})
	if err != nil {
		return 0, err
	}
	defer e.rt.Remove(context.WithoutCancel(ctx), b.ID(), true)
	if err := b.Start(ctx); err != nil {
		return 0, err
	}
	if err := runOne(b, "true"); err != nil {
		return 0, err
	}
	ms := float64(time.Since(t).Microseconds()) / 1000
	if acc, ok := b.Info().Backend["accel"].(string); ok {
		e.info(iso+".accel", acc)
	}
	return ms, nil
}

// benchVMExtras measures the same QEMU, machine, accelerator and kernel
// booting an initramfs whose init powers off at once, and the host RSS of
// QEMU with an idle 256 MiB box.
func benchVMExtras(ctx context.Context, e *env) error {
	if !e.has(libbox.IsolationVM) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	rt := e.rt
	o, err := libbox.Options{Home: e.home}.WithEnv() // the same kernel and accelerator as the runtime's boxes
	if err != nil {
		return err
	}
	bareOpts := qemu.Options{Home: o.Home, BootTimeout: o.BootTimeout, Accel: o.Accel, Kernel: o.Kernel, KernelModules: o.KernelModules}
	var bare, vs, perRound []float64
	for r := 0; r < e.rounds; r++ {
		d, err := qemu.BareBoot(ctx, bareOpts)
		if err != nil {
			return err
		}
		ms, err := startFirstExec(ctx, e, libbox.IsolationVM)
		if err != nil {
			return err
		}
		bms := float64(d.Microseconds()) / 1000
		bare, vs = append(bare, bms), append(vs, ms)
		perRound = append(perRound, ms/bms)
	}
	e.metric("start.qemu_bare.ms", median(bare))
	e.metric("start.vm.first_exec_ms", median(vs))
	e.ratioAtMost("vm create->first exec / bare qemu boot", 1.3, perRound)
	b, err := rt.Create(ctx, libbox.BoxOptions{Isolation: libbox.IsolationVM, MemoryMiB: 256})
	if err != nil {
		return err
	}
	defer rt.Remove(context.Background(), b.ID(), true)
	if err := b.Start(ctx); err != nil {
		return err
	}
	if err := runOne(b, "true"); err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	pid, _ := b.Info().Backend["pid"].(int)
	if pid <= 0 {
		return fmt.Errorf("no QEMU pid in box info")
	}
	e.metric("mem.vm.host_rss_kb", rssKB(pid))
	return nil
}

// bwrapCmd returns a maker of `bwrap ... true` in the builtin image with
// the namespaces a sandbox box gets.
func bwrapCmd(ctx context.Context, rt *libbox.Runtime) (func() *exec.Cmd, error) {
	bw, err := exec.LookPath("bwrap")
	if err != nil {
		return nil, errors.New("bwrap not installed (apt-get install bubblewrap)")
	}
	imgs, err := rt.Images(ctx)
	if err != nil || len(imgs) == 0 {
		return nil, fmt.Errorf("no image to run bwrap in: %v", err)
	}
	root := imgs[0].Root
	return func() *exec.Cmd {
		return exec.Command(bw, "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-ipc",
			"--bind", root, "/", "--proc", "/proc", "--dev", "/dev", "--die-with-parent", "/bin/true")
	}, nil
}

// benchCABI compares sequential `true` execs through box_exec_async from a
// C program (bench/c/exec_p50.c, built next to the bench, on its own box)
// with Go execs on a box of this process. The two alternate in batches of
// cabiBatch (C, Go, C, Go, ...) so both run under the same load; each round
// takes the difference of the two p50s over n execs each. The C program
// also reports its CPU time, compared with this process's per Go exec.
func benchCABI(ctx context.Context, e *env) error {
	if !e.has(libbox.IsolationSandbox) {
		return nil
	}
	b, done, err := e.box(ctx, libbox.BoxOptions{Isolation: libbox.IsolationSandbox})
	if err != nil {
		return err
	}
	defer done()
	c, err := startCExec(filepath.Join(exeDir(), "bench-exec-c"), filepath.Join(e.home, "cabi"))
	if err != nil {
		return err
	}
	defer c.close()
	goExec := func() error { return runOne(b, "true") }
	// Warm-up: both sides, discarded.
	if _, _, err := c.batch(20); err != nil {
		return err
	}
	if _, err := sequential(20, 0, goExec); err != nil {
		return err
	}
	const n = 600
	var perRound, cs, gs, cpuDiff []float64
	for r := 0; r < e.rounds; r++ {
		var dc, dg []time.Duration
		var cpuC, cpuG time.Duration
		for len(dc) < n {
			d, cpu, err := c.batch(cabiBatch)
			if err != nil {
				return err
			}
			dc, cpuC = append(dc, d...), cpuC+cpu
			c0 := cpuTime()
			d, err = sequential(cabiBatch, 0, goExec)
			if err != nil {
				return err
			}
			dg, cpuG = append(dg, d...), cpuG+cpuTime()-c0
		}
		pc, pg := pct(dc, 0.5), pct(dg, 0.5)
		cs, gs = append(cs, pc), append(gs, pg)
		perRound = append(perRound, pc-pg)
		cpuDiff = append(cpuDiff, float64((cpuC-cpuG).Microseconds())/float64(len(dc)))
	}
	e.metric("binding.c.exec_p50_us", median(cs))
	e.metric("binding.c.go_exec_p50_us", median(gs))
	e.metric("binding.c.host_cpu_minus_go_us", median(cpuDiff))
	e.ratioAtMost("C ABI exec p50 - Go exec p50 (us)", 50, perRound)
	return nil
}

// cabiBatch is how many execs one side runs before the other's turn: one,
// so each C exec has a Go exec next to it (A-B-A-B).
const cabiBatch = 1

// cExec is bench/c/exec_p50.c in -serve mode.
type cExec struct {
	cmd  *exec.Cmd
	wait func() error // cmd.Wait, through startOwned
	in   io.WriteCloser
	out  *bufio.Reader
}

func startCExec(bin, home string) (*cExec, error) {
	cmd := exec.Command(bin, home, "-serve")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	wait, err := startOwned(cmd)
	if err != nil {
		return nil, fmt.Errorf("%s: %v (build it with ./build.sh build)", bin, err)
	}
	c := &cExec{cmd: cmd, wait: wait, in: in, out: bufio.NewReader(out)}
	if line, err := c.out.ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
		c.close()
		return nil, fmt.Errorf("%s -serve: no box (%q, %v)", bin, line, err)
	}
	return c, nil
}

// batch runs k execs in the C program: their durations and its CPU time.
func (c *cExec) batch(k int) ([]time.Duration, time.Duration, error) {
	if _, err := fmt.Fprintf(c.in, "%d\n", k); err != nil {
		return nil, 0, fmt.Errorf("bench-exec-c: %w", err)
	}
	line, err := c.out.ReadString('\n')
	if err != nil {
		return nil, 0, fmt.Errorf("bench-exec-c: an exec failed (%w)", err)
	}
	f := strings.Fields(line)
	if len(f) != k+1 {
		return nil, 0, fmt.Errorf("bench-exec-c printed %q", line)
	}
	us := make([]time.Duration, len(f))
	for i, s := range f {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, 0, fmt.Errorf("bench-exec-c printed %q", line)
		}
		us[i] = time.Duration(v * float64(time.Microsecond))
	}
	return us[1:], us[0], nil
}

// close ends the C program (it removes its box) and waits for it.
func (c *cExec) close() {
	c.in.Close()
	done := make(chan struct{})
	go func() { c.wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		c.cmd.Process.Kill()
		<-done
	}
}

// serveGoExecs is the Go side of the binding benches (Python, Node): it
// opens a runtime on a fresh home, starts a sandbox box and prints "ready";
// then for each line "N C" it runs N `true` execs from C callers, as the
// binding.go.1000_ms metric does, and prints "<wall ms> <cpu ms>" (this
// process's CPU time). An empty line or EOF ends it. The binding bench
// alternates its own runs with these, round by round, so both see the
// same load.
func serveGoExecs(in io.Reader, out io.Writer) error {
	rt, _, done, err := openRuntime("libbox-bench-go-")
	if err != nil {
		return err
	}
	defer done()
	ctx := context.Background()
	b, err := rt.Create(ctx, libbox.BoxOptions{Isolation: libbox.IsolationSandbox})
	if err != nil {
		return err
	}
	defer rt.Remove(context.WithoutCancel(ctx), b.ID(), true)
	if err := b.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintln(out, "ready")
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		var n, c int
		if k, _ := fmt.Sscanf(sc.Text(), "%d %d", &n, &c); k != 2 || n < 1 || c < 1 {
			return nil
		}
		c0, t := cpuTime(), time.Now()
		if _, err := concurrent(n, c, func() error { return runOne(b, "true") }); err != nil {
			return err
		}
		fmt.Fprintf(out, "%.3f %.3f\n", float64(time.Since(t).Microseconds())/1000, float64((cpuTime()-c0).Microseconds())/1000)
	}
	return sc.Err()
}

func write(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	// Keep metrics other benches merged into the file earlier this run?
	// No: results.json is rewritten first; binding benches merge after.
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if r, ok := v.(*results); ok {
		printTable(r)
	}
	return nil
}

func printTable(r *results) {
	fmt.Printf("%-40s %14s\n", "metric", "value")
	for _, k := range sortedKeys(r.Metrics) {
		fmt.Printf("%-40s %14.1f\n", k, r.Metrics[k])
	}
	for _, b := range sortedKeys(r.Stages) {
		fmt.Printf("stages of %s (median us):\n", b)
		for _, k := range sortedKeys(r.Stages[b]) {
			fmt.Printf("  %-38s %14.1f\n", k, r.Stages[b][k])
		}
	}
	fmt.Println("ratios (median [min..max], target):")
	for _, k := range sortedKeys(r.Ratios) {
		x := r.Ratios[k]
		op := "<="
		if x.Goal == "at_least" {
			op = ">="
		}
		fmt.Printf("  %-52s %8.2f [%.2f..%.2f] %s %g  %s\n", k, x.Median, x.Min, x.Max, op, x.Target, x.Status)
	}
	for _, k := range sortedKeys(r.Info) {
		fmt.Printf("info %s = %s\n", k, r.Info[k])
	}
}
