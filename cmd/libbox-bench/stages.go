package main

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/libbox"
)

func init() { register("stages", benchStages) }

// benchStages breaks box start and exec into their stages from the host's
// and the agent's timestamps (the agent's clock corrected by the offset
// estimated with pings; a sandbox shares the host's clock). Each stage is
// the median over the samples, so the stages need not add up to the
// median total exactly.
func benchStages(ctx context.Context, e *env) error {
	for _, iso := range e.isolations {
		n, execs := 15, 300
		if iso == libbox.IsolationVM {
			n, execs = 3, 60
		}
		if err := startStages(ctx, e, iso, n); err != nil {
			return fmt.Errorf("%s start: %w", iso, err)
		}
		if err := execStages(ctx, e, iso, execs, 0); err != nil {
			return fmt.Errorf("%s exec: %w", iso, err)
		}
		// As Run and the C ABI do: a short process's start, output and
		// exit come back in one message.
		if err := execStages(ctx, e, iso, execs, libbox.RunBatch); err != nil {
			return fmt.Errorf("%s batched exec: %w", iso, err)
		}
	}
	return nil
}

// stageSet collects samples of named stages, in order.
type stageSet struct {
	names   []string
	samples map[string][]float64
}

func (s *stageSet) add(name string, d time.Duration) {
	if s.samples == nil {
		s.samples = map[string][]float64{}
	}
	if _, ok := s.samples[name]; !ok {
		s.names = append(s.names, name)
	}
	s.samples[name] = append(s.samples[name], float64(d.Nanoseconds())/1000)
}

func (s *stageSet) record(e *env, breakdown string) {
	for i, name := range s.names {
		e.stage(breakdown, fmt.Sprintf("%d_%s", i+1, name), median(s.samples[name]))
	}
}

// selfCPU is the user + system time of this process.
func selfCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// since is b - a, or 0 when either is unknown.
func since(a, b time.Time) time.Duration {
	if a.IsZero() || b.IsZero() {
		return 0
	}
	return b.Sub(a)
}

func startStages(ctx context.Context, e *env, iso string, n int) error {
	var s, cpu stageSet
	for i := 0; i < n+1; i++ {
		self0, all0 := selfCPU(), cpuTimeAll()
		t0 := time.Now()
		b, err := e.rt.Create(ctx, libbox.BoxOptions{Isolation: iso})
		if err != nil {
			return err
		}
		t1 := time.Now()
		err = b.Start(ctx)
		t2 := time.Now()
		if err == nil {
			err = runOne(b, "true")
		}
		t3 := time.Now()
		var boot map[string]time.Time
		var off time.Duration
		if err == nil {
			boot, err = b.AgentBootTimes(ctx)
		}
		if err == nil && iso != libbox.IsolationSandbox {
			off, _, err = b.AgentClockOffset(ctx)
		}
		pid, _ := b.Info().Backend["pid"].(int)
		agentUser, agentSys := procCPUSplit(pid)
		self1 := selfCPU()
		_ = e.rt.Remove(context.WithoutCancel(ctx), b.ID(), true)
		selfAll, all := selfCPU()-self0, cpuTimeAll()-all0
		if err != nil {
			return err
		}
		if i == 0 {
			continue // warm-up
		}
		// CPU of one box's life: the host process until the first exec,
		// its removal, and what the agent and its children used (ticks).
		cpu.add("host process: create, start, first exec", self1-self0)
		cpu.add("host process: remove", selfAll-(self1-self0))
		cpu.add("agent user (and what it ran) until the first exec", agentUser)
		cpu.add("agent system (mounts, namespaces; and what it ran)", agentSys)
		cpu.add("total incl. reaped processes", all)
		host := func(k string) time.Time {
			if t, ok := boot[k]; ok {
				return t.Add(-off)
			}
			return time.Time{}
		}
		s.add("create", t1.Sub(t0))
		s.add("launch (fork, namespaces, exec, Go runtime init)", since(t1, host("main")))
		s.add("boot (mounts; modules in a VM)", since(host("main"), host("boot")))
		s.add("agent runtime (spawner, root)", since(host("boot"), host("runtime")))
		s.add("gRPC server up", since(host("runtime"), host("serving")))
		s.add("host connect (dial, HTTP/2, ping)", since(host("serving"), t2))
		s.add("first exec", t3.Sub(t2))
		s.add("total", t3.Sub(t0))
	}
	s.record(e, "start."+iso)
	cpu.record(e, "start_cpu."+iso)
	return nil
}

func execStages(ctx context.Context, e *env, iso string, n int, batch time.Duration) error {
	b, done, err := e.box(ctx, libbox.BoxOptions{Isolation: iso})
	if err != nil {
		return err
	}
	defer done()
	var off time.Duration
	if iso != libbox.IsolationSandbox {
		if off, _, err = b.AgentClockOffset(ctx); err != nil {
			return err
		}
	}
	var s stageSet
	for i := 0; i < n+20; i++ {
		p, err := b.Exec(ctx, libbox.Command{Args: []string{"echo", "x"}, Batch: batch})
		if err != nil {
			return err
		}
		if _, err := p.Wait(ctx); err != nil {
			return err
		}
		end := time.Now()
		t := p.Trace()
		if i < 20 {
			continue // warm-up
		}
		h := func(x time.Time) time.Time {
			if x.IsZero() {
				return x
			}
			return x.Add(-off)
		}
		s.add("host send (libbox, gRPC stream, transport, agent decode)", since(t.Call, h(t.Received)))
		s.add("agent prepare + spawn hand-off", since(h(t.Received), h(t.Dequeued)))
		s.add("fork/exec on the spawn thread", since(h(t.Dequeued), h(t.Spawned)))
		s.add("first output (spawned -> first chunk read)", since(h(t.Spawned), h(t.FirstOutput)))
		s.add("process runs until reaped (spawned -> exit seen)", since(h(t.Spawned), h(t.Exited)))
		s.add("output drain + exit event", since(h(t.Exited), h(t.ExitSent)))
		s.add("exit report (agent send -> host receive)", since(h(t.ExitSent), t.ExitReceived))
		s.add("host finish (stream end, Wait returns)", end.Sub(t.ExitReceived))
		s.add("started report (spawned -> host has pid)", since(h(t.Spawned), t.Started))
		s.add("total", end.Sub(t.Call))
	}
	name := "exec." + iso
	if batch > 0 {
		name = "exec_batched." + iso
	}
	s.record(e, name)
	return nil
}
