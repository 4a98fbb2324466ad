package libbox_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libbox/libbox/internal/testutil"
	"github.com/libbox/libbox/libbox"
)

// TestVMTemplateStart: after Warm, VM boxes start by restoring the
// template, each with its own hostname and random state; Warm again finds
// it; a runtime opened with LIBBOX_VM_TEMPLATES=0 boots instead.
func TestVMTemplateStart(t *testing.T) {
	testutil.RequireQEMU(t)
	t.Setenv("LIBBOX_VM_TEMPLATES", "1") // ./build.sh test turns them off elsewhere
	home := t.TempDir()
	removeAllOnCleanup(t, home)
	rt := openRT(t, home)
	ctx := ctxT(t, 10*time.Minute)
	if err := rt.Warm(ctx, "busybox", libbox.BoxOptions{}); err != nil {
		if errors.Is(err, libbox.ErrUnsupported) {
			t.Skipf("no VM on this host: %v", err)
		}
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := rt.Warm(ctx, "busybox", libbox.BoxOptions{}); err != nil {
		t.Fatalf("second Warm: %v", err)
	}
	t.Logf("Warm of an existing template: %s", time.Since(t0).Round(time.Millisecond))
	var random []string
	var last *libbox.Box
	for _, name := range []string{"restored-1", "restored-2"} {
		b, err := rt.Create(ctx, libbox.BoxOptions{Name: name, Isolation: libbox.IsolationVM})
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
		out := sh(t, b, "cat /proc/sys/kernel/hostname; echo $HOSTNAME; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'")
		t.Logf("%s: start and first exec in %s", name, time.Since(t0).Round(time.Millisecond))
		if got := b.Info().Backend["template"]; got == "" || got == nil {
			t.Errorf("%s booted instead of restoring the template (backend info %v)", name, b.Info().Backend)
		}
		lines := strings.Split(out, "\n")
		if len(lines) != 3 || lines[0] != name || lines[1] != name {
			t.Fatalf("%s: hostname and $HOSTNAME: %q", name, out)
		}
		random = append(random, lines[2])
		last = b
	}
	if random[0] == random[1] {
		t.Errorf("two restored boxes read the same random bytes: %s", random[0])
	}
	// A memory snapshot of a restored box (whose RAM is the template's file,
	// copy on write) holds all of its RAM: a clone resumes it.
	sh(t, last, "echo from-restored > /tmp/mark")
	if _, err := last.Snapshot(ctx, "of-restored", libbox.SnapshotOptions{Memory: true}); err != nil {
		t.Fatal(err)
	}
	c, err := rt.Create(ctx, libbox.BoxOptions{From: "of-restored", Name: "resumed"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.Info().Backend["resumed"]; got == "" || got == nil {
		t.Errorf("the clone booted instead of resuming (backend info %v)", c.Info().Backend)
	}
	if got := sh(t, c, "cat /tmp/mark /proc/sys/kernel/hostname"); got != "from-restored\nresumed\n" {
		t.Errorf("clone of a restored box's memory snapshot: %q", got)
	}

	t.Setenv("LIBBOX_VM_TEMPLATES", "0")
	rt2 := openRT(t, home)
	b, err := rt2.Create(ctx, libbox.BoxOptions{Isolation: libbox.IsolationVM})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := b.Info().Backend["template"]; got != "" {
		t.Errorf("with LIBBOX_VM_TEMPLATES=0 the box restored template %v", got)
	}
	if got := strings.TrimSpace(sh(t, b, "cat /proc/sys/kernel/hostname")); got != b.ID()[:12] {
		t.Errorf("booted box hostname %q, want %q", got, b.ID()[:12])
	}
}
