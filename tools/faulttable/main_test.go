package main

import (
	"strings"
	"testing"
	"time"
)

func TestRender(t *testing.T) {
	in := `{"row":1,"case":"go signal (sandbox)","settle_ms":6.2}
{"row":1,"case":"go signal (sandbox)","settle_ms":12.5}
{"row":1,"case":"go signal (sandbox)","settle_ms":1500}

{"row":4,"case":"create on a full home fails (sandbox)","settle_ms":1.3}
`
	s, err := read(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	doc := render(s, time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC), 2)
	for _, want := range []string{
		"| go signal (sandbox) | 3 | 12.5 ms | 1.50 s |",
		"| create on a full home fails (sandbox) | 1 | 1.3 ms | 1.3 ms |",
		"## Row 2\n", "Not measured in this run.",
		"Measured 2026-12-02 01:00 UTC on a 2-CPU machine",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("rendered table lacks %q:\n%s", want, doc)
		}
	}
	if strings.Count(doc, "Not measured in this run.") != 4 {
		t.Errorf("rows 2, 3, 5, 6 are unmeasured:\n%s", doc)
	}
	for _, bad := range []string{`{"row":7,"case":"x","settle_ms":1}`, `{"row":1,"settle_ms":1}`, `{"row":1,"case":"x","settle_ms":-1}`, `not json`} {
		if _, err := read(strings.NewReader(bad)); err == nil {
			t.Errorf("read %s: no error", bad)
		}
	}
}
