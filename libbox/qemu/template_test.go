//go:build linux

package qemu

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libbox/libbox/guest/agentpb"
	"github.com/libbox/libbox/internal/testutil"
	"github.com/libbox/libbox/libbox/backend"
)

func TestNormalArgs(t *testing.T) {
	spec := backend.Spec{ID: "abc", Dir: "/h/boxes/abc", Hostname: "web1"}
	args := []string{"-name", "libbox-abc", "-chardev", "file,id=con,path=/h/boxes/abc/console.log",
		"-append", "console=ttyS0 libbox.hostname=web1 libbox.root=/dev/vda", "-m", "512"}
	want := []string{"-name", "@NAME", "-chardev", "file,id=con,path=@DIR/console.log",
		"-append", "console=ttyS0 libbox.hostname=@HOST libbox.root=/dev/vda", "-m", "512"}
	if got := normalArgs(args, spec); !slices.Equal(got, want) {
		t.Errorf("normalArgs:\n got %q\nwant %q", got, want)
	}
	other := backend.Spec{ID: "xyz", Dir: "/h/vm/templates/build-1", Hostname: templateHostname}
	args2 := []string{"-name", "libbox-xyz", "-chardev", "file,id=con,path=/h/vm/templates/build-1/console.log",
		"-append", "console=ttyS0 libbox.hostname=" + templateHostname + " libbox.root=/dev/vda", "-m", "512"}
	if !slices.Equal(normalArgs(args, spec), normalArgs(args2, other)) {
		t.Errorf("a box's and its template's arguments differ after normalArgs")
	}
	args2[len(args2)-1] = "1024"
	if slices.Equal(normalArgs(args, spec), normalArgs(args2, other)) {
		t.Errorf("a memory change is invisible to normalArgs")
	}
}

func TestTemplateEligible(t *testing.T) {
	for _, spec := range []backend.Spec{
		{Volumes: []backend.Volume{{HostPath: "/tmp", BoxPath: "/mnt"}}},
		{Network: true},
	} {
		if err := templateEligible(spec); err == nil || !strings.Contains(err.Error(), "boots its kernel") {
			t.Errorf("templateEligible(%+v) = %v, want FailedPrecondition", spec, err)
		}
	}
	if err := templateEligible(backend.Spec{}); err != nil {
		t.Errorf("plain box: %v", err)
	}
}

// restoredBox starts a box from the template and gives it its identity
// as the runtime does.
func restoredBox(t *testing.T, b *Backend, id string) (backend.Instance, *client) {
	t.Helper()
	spec := newSpec(t, id)
	spec.FromTemplate = true
	inst, cl, err := bootBox(t, b, spec)
	if err != nil {
		t.Fatalf("restoring %s: %v", id, err)
	}
	t.Cleanup(func() {
		cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		inst.Kill()
		inst.Stop(ctx)
	})
	if inst.Info()["template"] == "" {
		t.Fatalf("box %s booted instead of restoring its template", id)
	}
	seed := make([]byte, 64)
	rand.Read(seed)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cl.Identify(ctx, &agentpb.IdentifyRequest{Seed: seed, UnixNanos: time.Now().UnixNano(), Hostname: id, BoxId: id}); err != nil {
		t.Fatalf("identify %s: %v", id, err)
	}
	return inst, cl
}

// TestVMTemplate builds one template, restores two boxes from it and
// checks they are distinct machines with the right clock and hostname,
// then runs 1,000 execs, 64 in flight, across them.
func TestVMTemplate(t *testing.T) {
	requireVM(t)
	fixtures(t)
	home := filepath.Join(workDir, "tmpl-home")
	b, err := New(testOptions(home, t.Logf))
	testutil.Must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*DefaultBootTimeout)
	defer cancel()
	spec := newSpec(t, "tmpl-src")
	t0 := time.Now()
	built, err := b.Warm(ctx, spec, true)
	if err != nil || !built {
		t.Fatalf("Warm = %v, %v; want a template built", built, err)
	}
	t.Logf("template built in %s", time.Since(t0).Round(time.Millisecond))
	if built, err := b.Warm(ctx, spec, true); err != nil || built {
		t.Fatalf("second Warm = %v, %v; want the existing template", built, err)
	}
	// The template's clock stopped when it was saved: let it fall well
	// behind the slack of the clock check below, however quick restores are.
	time.Sleep(12 * time.Second)

	// The template's clock stopped when it was saved: let it fall behind
	// the host's far enough for the clock check to see a box left on it.
	time.Sleep(3 * time.Second)
	_, c1 := restoredBox(t, b, "tmpl-a")
	_, c2 := restoredBox(t, b, "tmpl-b")
	random := func(cl *client) string {
		return mustRun(t, cl, "sh", "-c", "head -c 32 /dev/urandom | busybox od -An -tx1")
	}
	r1, r2 := random(c1), random(c2)
	if r1 == r2 {
		t.Errorf("two restored boxes read the same random bytes: %s", r1)
	}
	for _, c := range []struct {
		cl   *client
		host string
	}{{c1, "tmpl-a"}, {c2, "tmpl-b"}} {
		if got := strings.TrimSpace(mustRun(t, c.cl, "cat", "/proc/sys/kernel/hostname")); got != c.host {
			t.Errorf("hostname %q, want %q", got, c.host)
		}
		// The box's clock lies between the host's before and after the
		// exec, with 5 s of slack (date prints whole seconds, and a TCG
		// guest starved of CPU keeps time by ticks it may lose); a
		// restored clock left alone would be the template's, over 12 s
		// behind (above).
		before := time.Now()
		out := strings.TrimSpace(mustRun(t, c.cl, "busybox", "date", "+%s"))
		after := time.Now()
		sec, err := strconv.ParseInt(out, 10, 64)
		if err != nil {
			t.Fatalf("date: %q", out)
		}
		if box := time.Unix(sec, 0); box.Before(before.Add(-5*time.Second)) || box.After(after.Add(5*time.Second)) {
			t.Errorf("box clock %s, want between %s and %s", box, before, after)
		}
		info, err := c.cl.Info(ctx, &agentpb.InfoRequest{})
		testutil.Must(t, err)
		if info.BoxId != c.host {
			t.Errorf("box id %q, want %q", info.BoxId, c.host)
		}
	}

	// Stress: 1,000 execs, 64 in flight, over both restored boxes.
	const total, inFlight = 1000, 64
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	sctx, scancel := context.WithTimeout(ctx, 10*time.Minute)
	defer scancel()
	for w := 0; w < inFlight; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1)
				if n > total {
					return
				}
				cl := c1
				if n%2 == 0 {
					cl = c2
				}
				want := "exec-" + strconv.FormatInt(n, 10)
				r, err := run(sctx, cl, "echo", want)
				if err != nil || r.exit.ExitCode != 0 || strings.TrimSpace(r.stdout) != want {
					if failed.Add(1) <= 3 {
						t.Errorf("exec %d: %v %v %q", n, err, r.exit, r.stdout)
					}
				}
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d execs failed", f, total)
	}
}

// TestVMTemplateKey checks that a change of the agent (or of the memory)
// is a new key, so the box boots instead of restoring the old template,
// and that the agent refuses an identity on a host process.
func TestVMTemplateKey(t *testing.T) {
	requireVM(t)
	fixtures(t)
	b, err := New(testOptions(filepath.Join(workDir, "key-home"), t.Logf))
	testutil.Must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), DefaultBootTimeout)
	defer cancel()
	spec := newSpec(t, "key-a")
	pr, err := b.prepare(ctx, spec)
	testutil.Must(t, err)
	k1, err := b.templateKey(pr, spec)
	testutil.Must(t, err)

	// The same agent with one more byte: a new initramfs, a new key.
	data, err := os.ReadFile(shared.agent)
	testutil.Must(t, err)
	agent2 := filepath.Join(workDir, "box-agent-2")
	testutil.Must(t, os.WriteFile(agent2, append(data, 0), 0o755))
	spec2 := spec
	spec2.AgentPath = agent2
	pr2, err := b.prepare(ctx, spec2)
	testutil.Must(t, err)
	k2, err := b.templateKey(pr2, spec2)
	testutil.Must(t, err)
	spec3 := spec
	spec3.MemoryMiB = 384
	k3, err := b.templateKey(pr, spec3)
	testutil.Must(t, err)
	if k1 == k2 || k1 == k3 || k2 == k3 {
		t.Fatalf("keys do not follow the agent and memory: %s %s %s", k1, k2, k3)
	}

	// A template under k1 (its content is not read before the match).
	dir := filepath.Join(b.templateRoot(), k1)
	testutil.Must(t, os.MkdirAll(dir, 0o700))
	args := []string{"-m", "512", "-append", "libbox.hostname=" + spec.Hostname}
	m := templateMeta{Format: templateFormat, Key: k1, Argv: normalArgs(args, spec), ImageID: spec.ImageID, CPUs: 1, MemoryMiB: 512}
	raw, _ := json.Marshal(m)
	testutil.Must(t, os.WriteFile(filepath.Join(dir, templateMetaFile), raw, 0o600))
	testutil.Must(t, os.WriteFile(filepath.Join(dir, diskName), []byte("disk"), 0o600))

	spec2.FromTemplate = true
	if _, tmpl, err := b.startDisk(ctx, spec2, pr2, args, true); err != nil || tmpl != "" {
		t.Errorf("changed agent: startDisk = %q, %v; want a boot", tmpl, err)
	}
	os.Remove(filepath.Join(spec.Dir, diskName))
	spec.FromTemplate = true
	got, tmpl, err := b.startDisk(ctx, spec, pr, args, true)
	if err != nil || tmpl != k1 || !slices.Contains(got, "-incoming") {
		t.Errorf("same key: startDisk = %q, %q, %v; want a restore from %s", got, tmpl, err, k1)
	}
	os.Remove(filepath.Join(spec.Dir, diskName))
	spec.FromTemplate = false
	if _, tmpl, err := b.startDisk(ctx, spec, pr, args, true); err != nil || tmpl != "" {
		t.Errorf("templates off: startDisk = %q, %v; want a boot", tmpl, err)
	}
	os.Remove(filepath.Join(spec.Dir, diskName))
	spec.FromTemplate = true
	if _, tmpl, err := b.startDisk(ctx, spec, pr, append(args, "-device", "new"), true); err != nil || tmpl != "" {
		t.Errorf("other arguments: startDisk = %q, %v; want a boot", tmpl, err)
	}
	if b.readTemplate(k1) != nil {
		t.Errorf("a template with other arguments was kept")
	}
}

// TestResumeColdBoot: a box made to boot cold boots even when its disk sits
// on a memory snapshot, and the resume marker is consumed either way.
func TestResumeColdBoot(t *testing.T) {
	dir, snap := t.TempDir(), t.TempDir()
	testutil.Must(t, os.WriteFile(filepath.Join(snap, memoryMetaFile), []byte(`{"format":1}`), 0o600))
	spec := backend.Spec{ID: "cold", Dir: dir, Layers: []string{snap}}
	testutil.Must(t, markResume(spec))
	if _, err := os.Stat(filepath.Join(dir, resumeMarker)); err != nil {
		t.Fatalf("no resume marker after a reset onto a memory snapshot: %v", err)
	}
	var logged []string
	b := &Backend{opts: Options{Logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }}}
	spec.ColdBoot = true
	args := []string{"-name", "cold"}
	got, resume := b.resumeArgs(context.Background(), spec, nil, slices.Clone(args))
	if resume != "" || !slices.Equal(got, args) {
		t.Fatalf("a cold-boot box resumes %q with %v", resume, got)
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "boot cold") {
		t.Fatalf("log says %q", logged)
	}
	if _, err := os.Stat(filepath.Join(dir, resumeMarker)); !os.IsNotExist(err) {
		t.Fatalf("resume marker left: %v", err)
	}
}
