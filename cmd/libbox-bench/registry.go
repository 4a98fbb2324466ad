package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/libbox/libbox/libbox"
)

// How to add a benchmark: in a file of this package, register it from an
// init function, and record numbers on the Env it gets:
//
//	func init() { register("network", benchNetwork) }
//
//	func benchNetwork(ctx context.Context, e *env) error {
//		b, done, err := e.box(ctx, libbox.BoxOptions{Isolation: libbox.IsolationSandbox})
//		if err != nil {
//			return err
//		}
//		defer done()
//		...
//		e.metric("net.sandbox.tcp_rr_us", v)
//		e.ratioAtMost("net rr / host rr", 2.0, perRound) // one value per round
//		return nil
//	}
//
// The core benchmarks run first (coreOrder), then the others one after
// another in registration order (file name order, then order within a
// file); `-only name,name` picks some. An error
// is recorded as info "error.<name>" and the others still run. Metric
// names are "<area>.<backend>.<what>_<unit>"; units: us, ms, per_s, kb.

// benchFunc measures one area.
type benchFunc func(ctx context.Context, e *env) error

type registered struct {
	name string
	fn   benchFunc
}

var benches []registered

// register adds a benchmark; call it from init.
func register(name string, fn benchFunc) {
	for _, b := range benches {
		if b.name == name {
			panic("libbox-bench: benchmark registered twice: " + name)
		}
	}
	benches = append(benches, registered{name, fn})
}

// ratio is one entry of results.json's "ratios": the median and spread of
// a ratio measured once per round, against its target.
type ratio struct {
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Target float64   `json:"target"`
	Goal   string    `json:"goal"`   // "at_most" or "at_least"
	Status string    `json:"status"` // "met", "not met", or "unstable" (the spread crosses the target)
	Rounds []float64 `json:"rounds"`
}

// env is what every benchmark gets: the shared runtime and the results.
type env struct {
	rt         *libbox.Runtime
	home       string
	isolations []string
	rounds     int // rounds for ratios (A-B-A-B pairs within each)

	mu     sync.Mutex
	res    *results
	stages map[string]map[string]float64 // guarded by mu
}

func (e *env) metric(name string, v float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.res.Metrics[name] = v
}

func (e *env) info(name, v string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.res.Info[name] = v
}

// has reports whether the backend is among those asked for (-isolation).
func (e *env) has(iso string) bool {
	for _, i := range e.isolations {
		if i == iso {
			return true
		}
	}
	return false
}

// ratioAtMost records a ratio whose goal is to stay at or below target,
// given its value in each round.
func (e *env) ratioAtMost(name string, target float64, rounds []float64) {
	e.addRatio(name, target, "at_most", rounds)
}

// ratioAtLeast records a ratio whose goal is to reach target.
func (e *env) ratioAtLeast(name string, target float64, rounds []float64) {
	e.addRatio(name, target, "at_least", rounds)
}

func (e *env) addRatio(name string, target float64, goal string, rounds []float64) {
	if len(rounds) == 0 {
		return
	}
	r := ratio{Median: median(rounds), Min: rounds[0], Max: rounds[0], Target: target, Goal: goal, Rounds: rounds}
	for _, v := range rounds {
		r.Min, r.Max = min(r.Min, v), max(r.Max, v)
	}
	good := func(v float64) bool {
		if goal == "at_least" {
			return v >= target
		}
		return v <= target
	}
	switch {
	case good(r.Min) && good(r.Max):
		r.Status = "met"
	case !good(r.Min) && !good(r.Max):
		r.Status = "not met"
	default:
		r.Status = "unstable"
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.res.Ratios[name] = r
}

// stage records one stage of a breakdown (e.g. "start.sandbox"), in µs;
// stages print in the order of their names' numeric prefix ("1_create").
func (e *env) stage(breakdown, name string, us float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.res.Stages[breakdown] == nil {
		e.res.Stages[breakdown] = map[string]float64{}
	}
	e.res.Stages[breakdown][name] = us
}

// box creates and starts a box; done removes it.
func (e *env) box(ctx context.Context, o libbox.BoxOptions) (*libbox.Box, func(), error) {
	b, err := e.rt.Create(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	done := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = e.rt.Remove(rctx, b.ID(), true)
	}
	if err := b.Start(ctx); err != nil {
		done()
		return nil, nil, err
	}
	return b, done, nil
}

// pairs runs a and b alternately n times each (A-B-A-B: same process, same
// load) after warm pairs, and returns each one's durations.
func pairs(n, warm int, a, b func() error) (da, db []time.Duration, err error) {
	for i := 0; i < warm; i++ {
		if err := a(); err != nil {
			return nil, nil, err
		}
		if err := b(); err != nil {
			return nil, nil, err
		}
	}
	da, db = make([]time.Duration, 0, n), make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t := time.Now()
		if err := a(); err != nil {
			return nil, nil, err
		}
		t2 := time.Now()
		if err := b(); err != nil {
			return nil, nil, err
		}
		da, db = append(da, t2.Sub(t)), append(db, time.Since(t2))
	}
	return da, db, nil
}

// coreOrder runs first, in this order; other benchmarks follow in
// registration order.
var coreOrder = []string{"exec", "start", "stages", "cabi", "vm", "churn"}

func ordered() []registered {
	rank := func(name string) int {
		for i, n := range coreOrder {
			if n == name {
				return i
			}
		}
		return len(coreOrder)
	}
	out := append([]registered(nil), benches...)
	sort.SliceStable(out, func(i, j int) bool { return rank(out[i].name) < rank(out[j].name) })
	return out
}

// runRegistered runs the selected benchmarks in order.
func runRegistered(ctx context.Context, e *env, only map[string]bool) {
	for _, b := range ordered() {
		if len(only) > 0 && !only[b.name] {
			continue
		}
		t := time.Now()
		err := b.fn(ctx, e)
		if err != nil {
			fmt.Fprintf(os.Stderr, "libbox-bench: %s: %v\n", b.name, err)
			e.info("error."+b.name, err.Error())
		}
		fmt.Fprintf(os.Stderr, "libbox-bench: %s took %.1fs\n", b.name, time.Since(t).Seconds())
	}
}

func benchNames() []string {
	names := make([]string, len(benches))
	for i, b := range ordered() {
		names[i] = b.name
	}
	return names
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
