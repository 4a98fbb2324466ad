// Package purego_test drives build/lib/libbox.so through purego (dlopen,
// purego.NewCallback) exactly as the Python and Node bindings load it: the
// seed pattern and 64 concurrent execs on one box, then a leak check.
package purego_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/libbox/libbox/internal/cabi"
)

func TestCABIThroughPurego(t *testing.T) {
	wd, _ := os.Getwd()
	path := cabi.DefaultPath(wd)
	if path == "" {
		t.Skip("build/lib/libbox.so not built: run ./build.sh build (or set LIBBOX_LIBRARY)")
	}
	l, err := cabi.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if v := l.ABIVersion(); v != 1 {
		t.Fatalf("ABI version %d", v)
	}
	rt, err := l.OpenRuntime(fmt.Sprintf(`{"home": %q}`, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	box, err := l.CreateStarted(rt, `{"isolation": "sandbox"}`)
	if err != nil {
		t.Fatal(err)
	}
	runMany := func(names []string) {
		calls := make([]*cabi.Call, len(names))
		execs := make([]uint64, len(names))
		for i, n := range names {
			calls[i], execs[i], err = l.Exec(box, fmt.Sprintf(`{"args": ["echo", "task %s"]}`, n))
			if err != nil {
				t.Fatal(err)
			}
		}
		for i, c := range calls {
			if err := c.Wait(60 * time.Second); err != nil {
				t.Fatal(err)
			}
			if c.Exit.Status != 0 || c.Exit.ExitCode != 0 || c.Out.String() != "task "+names[i]+"\n" {
				t.Errorf("exec %s: status %d code %d out %q msg %q", names[i], c.Exit.Status, c.Exit.ExitCode, c.Out.String(), c.Msg)
			}
			l.Release(execs[i], nil)
		}
	}
	runMany([]string{"A", "B", "C", "D"})
	many := make([]string, 64)
	for i := range many {
		many[i] = fmt.Sprint(i)
	}
	runMany(many)
	l.Release(box, nil)
	if err := l.CloseRuntime(rt); err != nil {
		t.Fatal(err)
	}
	if n := l.LiveHandles(); n != 0 {
		t.Fatalf("%d live handles after close", n)
	}
}
