// Command libbox-bench measures libbox side by side with its physical
// floor (fork/exec on the host) and writes bench/out/results.json as
// {"metrics": {...}, "info": {...}}; with -stress it runs the long stress
// and writes bench/out/stress.json. Numbers are reported, never asserted.
package main

import (
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
	"github.com/libbox/libbox/libbox"
	"github.com/libbox/libbox/libbox/qemu"
)

type results struct {
	Metrics map[string]float64 `json:"metrics"`
	Info    map[string]string  `json:"info"`
}

func main() {
	out := flag.String("out", "bench/out/results.json", "output JSON file")
	stress := flag.Bool("stress", false, "run the stress instead of the benchmarks")
	n := flag.Int("n", 10000, "stress: number of execs")
	isolations := flag.String("isolation", "sandbox,vm", "comma-separated backends to measure/stress (sandbox,vm)")
	flag.Parse()
	var err error
	if *stress {
		err = runStress(*out, *n, strings.Split(*isolations, ","))
	} else {
		err = runBench(*out, strings.Split(*isolations, ","))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "libbox-bench:", err)
		os.Exit(1)
	}
}

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
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	a := &agentProc{cmd: cmd, conn: conn, client: agentpb.NewAgentClient(conn), dir: dir}
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
	go func() { a.cmd.Wait(); close(done) }()
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

func runBench(out string, isolations []string) error {
	res := results{Metrics: map[string]float64{}, Info: map[string]string{}}
	m := res.Metrics
	res.Info["host.cpus"] = strconv.Itoa(runtime.NumCPU())
	res.Info["date"] = time.Now().UTC().Format(time.RFC3339)

	// Native floor.
	d, err := sequential(2000, 100, native)
	if err != nil {
		return err
	}
	m["exec.native.p50_us"], m["exec.native.p99_us"] = pct(d, 0.5), pct(d, 0.99)
	if m["throughput.native.n64_per_s"], err = concurrent(5000, 64, native); err != nil {
		return err
	}

	// The agent as a plain process over a unix socket.
	a, err := startAgent()
	if err != nil {
		return err
	}
	d, err = sequential(2000, 100, func() error { return a.exec("/bin/true") })
	if err == nil {
		m["exec.agent.p50_us"], m["exec.agent.p99_us"] = pct(d, 0.5), pct(d, 0.99)
		m["throughput.agent.n64_per_s"], err = concurrent(5000, 64, func() error { return a.exec("/bin/true") })
	}
	time.Sleep(500 * time.Millisecond)
	m["mem.agent.rss_kb"] = a.rssKB()
	a.close()
	if err != nil {
		return err
	}

	home, err := os.MkdirTemp("", "libbox-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(home)
	rt, err := libbox.Open(libbox.Options{Home: home})
	if err != nil {
		return err
	}
	defer rt.Close()
	for _, iso := range isolations {
		if err := benchBackend(rt, iso, m, res.Info); err != nil {
			fmt.Fprintf(os.Stderr, "libbox-bench: %s: %v\n", iso, err)
			res.Info["error."+iso] = err.Error()
		}
	}
	for _, iso := range isolations {
		if iso == libbox.IsolationVM {
			if err := benchVMExtras(rt, home, m); err != nil {
				res.Info["error.vm.extras"] = err.Error()
			}
		}
	}
	if err := benchBwrap(rt, m); err != nil {
		res.Info["error.bwrap"] = err.Error()
	}
	if err := benchCABI(home, m); err != nil {
		res.Info["error.binding.c"] = err.Error()
	}
	return write(out, &res)
}

func benchBackend(rt *libbox.Runtime, iso string, m map[string]float64, info map[string]string) error {
	ctx := context.Background()
	// Start time: create + start + first exec, 5 times.
	var starts []float64
	for i := 0; i < 5; i++ {
		t := time.Now()
		b, err := rt.Create(ctx, libbox.BoxOptions{Isolation: iso})
		if err != nil {
			return err
		}
		if err := b.Start(ctx); err != nil {
			return err
		}
		if err := runOne(b, "true"); err != nil {
			return err
		}
		starts = append(starts, float64(time.Since(t).Microseconds())/1000)
		if bi := b.Info().Backend; bi != nil {
			if acc, ok := bi["accel"].(string); ok {
				info[iso+".accel"] = acc
			}
		}
		if err := rt.Remove(ctx, b.ID(), true); err != nil {
			return err
		}
	}
	m["start."+iso+".first_exec_ms"] = median(starts)

	b, err := rt.Create(ctx, libbox.BoxOptions{Isolation: iso})
	if err != nil {
		return err
	}
	defer rt.Remove(ctx, b.ID(), true)
	if err := b.Start(ctx); err != nil {
		return err
	}
	n := 2000
	if iso == libbox.IsolationVM {
		n = 300
	}
	d, err := sequential(n, 50, func() error { return runOne(b, "true") })
	if err != nil {
		return err
	}
	m["exec."+iso+".p50_us"], m["exec."+iso+".p99_us"] = pct(d, 0.5), pct(d, 0.99)
	total := 5000
	if iso == libbox.IsolationVM {
		total = 1000
	}
	if m["throughput."+iso+".n64_per_s"], err = concurrent(total, 64, func() error { return runOne(b, "true") }); err != nil {
		return err
	}
	if iso == libbox.IsolationSandbox {
		// The Go API doing what the Python and Node benches do.
		t := time.Now()
		if _, err := concurrent(1000, 64, func() error { return runOne(b, "true") }); err != nil {
			return err
		}
		m["binding.go.1000_ms"] = float64(time.Since(t).Microseconds()) / 1000
	}
	return nil
}

// benchVMExtras measures the same QEMU, machine, accelerator and kernel
// booting an initramfs whose init powers off at once, and the host RSS of
// QEMU with an idle 256 MiB box.
func benchVMExtras(rt *libbox.Runtime, home string, m map[string]float64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var bare []float64
	for i := 0; i < 3; i++ {
		d, err := qemu.BareBoot(ctx, home)
		if err != nil {
			return err
		}
		bare = append(bare, float64(d.Microseconds())/1000)
	}
	m["start.qemu_bare.ms"] = median(bare)
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
	m["mem.vm.host_rss_kb"] = rssKB(pid)
	return nil
}

func benchBwrap(rt *libbox.Runtime, m map[string]float64) error {
	bw, err := exec.LookPath("bwrap")
	if err != nil {
		return errors.New("bwrap not installed (apt-get install bubblewrap)")
	}
	imgs, err := rt.Images(context.Background())
	if err != nil || len(imgs) == 0 {
		return fmt.Errorf("no image to run bwrap in: %v", err)
	}
	root := imgs[0].Root
	var ts []float64
	for i := 0; i < 6; i++ {
		t := time.Now()
		cmd := exec.Command(bw, "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-ipc",
			"--bind", root, "/", "--proc", "/proc", "--dev", "/dev", "--die-with-parent", "/bin/true")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("bwrap: %v: %s", err, out)
		}
		if i > 0 {
			ts = append(ts, float64(time.Since(t).Microseconds())/1000)
		}
	}
	m["start.bwrap.ms"] = median(ts)
	return nil
}

// benchCABI runs bench/c/exec_p50.c (built next to the bench): sequential
// `true` execs through box_exec_async from a C program, timed from the
// call to on_exit.
func benchCABI(home string, m map[string]float64) error {
	bin := filepath.Join(exeDir(), "bench-exec-c")
	out, err := exec.Command(bin, filepath.Join(home, "cabi"), "2000").Output()
	if err != nil {
		return fmt.Errorf("%s: %v (build it with ./build.sh build)", bin, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "p50_us" {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return err
			}
			m["binding.c.exec_p50_us"] = v
			return nil
		}
	}
	return fmt.Errorf("%s printed no p50: %q", bin, out)
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
	keys := make([]string, 0, len(r.Metrics))
	for k := range r.Metrics {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Printf("%-34s %14s\n", "metric", "value")
	for _, k := range keys {
		fmt.Printf("%-34s %14.1f\n", k, r.Metrics[k])
	}
	ratio := func(name string, a, b string, f func(x, y float64) float64) {
		x, okx := r.Metrics[a]
		y, oky := r.Metrics[b]
		if okx && oky && y > 0 {
			fmt.Printf("%-34s %14.2f\n", name, f(x, y))
		}
	}
	div := func(x, y float64) float64 { return x / y }
	fmt.Println("ratios (targets in parentheses):")
	ratio("agent/native p50 (<=1.5x+300us)", "exec.agent.p50_us", "exec.native.p50_us", div)
	ratio("agent/native throughput (>=0.5)", "throughput.agent.n64_per_s", "throughput.native.n64_per_s", div)
	ratio("sandbox/native p50 (<=1.5x+300us)", "exec.sandbox.p50_us", "exec.native.p50_us", div)
	ratio("sandbox start / bwrap (<=1.5)", "start.sandbox.first_exec_ms", "start.bwrap.ms", div)
	ratio("C ABI - Go p50 us (<=50)", "binding.c.exec_p50_us", "exec.sandbox.p50_us", func(x, y float64) float64 { return x - y })
	ratio("vm start / bare qemu (<=1.3)", "start.vm.first_exec_ms", "start.qemu_bare.ms", div)
	for k, v := range r.Info {
		fmt.Printf("info %s = %s\n", k, v)
	}
}
