package main

import "testing"

func TestRatioStatus(t *testing.T) {
	for _, c := range []struct {
		goal   string
		rounds []float64
		want   string
	}{
		{"at_most", []float64{0.8, 0.9, 1.0}, "met"},
		{"at_most", []float64{1.1, 1.3, 1.2}, "not met"},
		{"at_most", []float64{0.9, 1.1, 0.95}, "unstable"},
		{"at_least", []float64{0.6, 0.5, 0.7}, "met"},
		{"at_least", []float64{0.4, 0.6, 0.45}, "unstable"},
		{"at_least", []float64{0.1, 0.2, 0.3}, "not met"},
	} {
		e := &env{res: &results{Ratios: map[string]ratio{}}}
		target := 1.0
		if c.goal == "at_least" {
			target = 0.5
		}
		e.addRatio("r", target, c.goal, c.rounds)
		r := e.res.Ratios["r"]
		if r.Status != c.want {
			t.Errorf("%s %v: status %q, want %q", c.goal, c.rounds, r.Status, c.want)
		}
		if r.Median != c.rounds[0] && r.Median != c.rounds[1] && r.Median != c.rounds[2] {
			t.Errorf("median %v not one of %v", r.Median, c.rounds)
		}
		if r.Min > r.Median || r.Max < r.Median {
			t.Errorf("spread %v..%v around %v", r.Min, r.Max, r.Median)
		}
	}
}

// Core benchmarks run first and in their fixed order, whatever the file
// order of registration.
func TestOrder(t *testing.T) {
	names := benchNames()
	for i, want := range coreOrder {
		if i >= len(names) || names[i] != want {
			t.Fatalf("order %v, want %v first", names, coreOrder)
		}
	}
}
