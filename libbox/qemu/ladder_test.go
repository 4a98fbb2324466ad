//go:build linux

package qemu

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/internal/testutil"
	"github.com/libbox/libbox/libbox/internal/vmboot"
)

// The ladder's decisions, tested with a fake QEMU: this test binary, run
// with LIBBOX_FAKE_QEMU set, behaves as QEMU would on each rung named in
// LIBBOX_FAKE_QEMU_FAIL ("rung=mode,..."): "timeout" hangs, "crash" dies
// of SIGSEGV, "msr" prints KVM's MSR error and aborts; any other rung
// answers the agent's stream handshake on its port like a booted agent.
// Each run appends "rung args..." to LIBBOX_FAKE_QEMU_LOG.
func init() {
	if os.Getenv("LIBBOX_FAKE_QEMU") == "" {
		return
	}
	fakeQEMU(os.Args[1:])
	os.Exit(0)
}

func fakeQEMU(args []string) {
	var mach, sock string
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-machine":
			mach = args[i+1]
		case "-chardev":
			if opts := args[i+1]; strings.Contains(opts, "id=agent") {
				for _, kv := range strings.Split(strings.ReplaceAll(opts, ",,", "\x00"), ",") {
					if p, ok := strings.CutPrefix(kv, "path="); ok {
						sock = strings.ReplaceAll(p, "\x00", ",")
					}
				}
			}
		}
	}
	parts := strings.Split(mach, ",")
	name := parts[0]
	for _, p := range parts[1:] {
		if a, ok := strings.CutPrefix(p, "accel="); ok {
			name += "-" + a
		}
	}
	if f, err := os.OpenFile(os.Getenv("LIBBOX_FAKE_QEMU_LOG"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600); err == nil {
		f.WriteString(name + " " + strings.Join(args, " ") + "\n")
		f.Close()
	}
	mode := ""
	for _, kv := range strings.Split(os.Getenv("LIBBOX_FAKE_QEMU_FAIL"), ",") {
		if r, m, ok := strings.Cut(kv, "="); ok && r == name {
			mode = m
		}
	}
	die := func(sig string) { // a real death by signal, as QEMU's
		_ = syscall.Exec("/bin/sh", []string{"sh", "-c", "kill -" + sig + " $$"}, os.Environ())
		os.Exit(3)
	}
	switch mode {
	case "timeout":
		time.Sleep(time.Hour)
	case "crash":
		die("SEGV")
	case "msr":
		os.Stderr.WriteString("qemu-system-x86_64: error: failed to set MSR 0x48b to 0x1582e00000000\n" +
			"qemu-system-x86_64: ../target/i386/kvm/kvm.c:3228: kvm_buf_set_msrs: Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.\n")
		die("ABRT")
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		os.Stderr.WriteString("fake qemu: " + err.Error() + "\n")
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		go func() {
			line, err := bufio.NewReader(c).ReadString('\n')
			if nonce, ok := strings.CutPrefix(strings.TrimSpace(line), "LIBBOX-HELLO "); ok && err == nil {
				io.WriteString(c, "LIBBOX-READY "+nonce+"\n")
			}
		}()
	}
}

type fakeHost struct {
	t      *testing.T
	b      *Backend
	qemu   string
	kernel vmboot.Kernel
	agent  string
	log    string
	kvm    string
}

// newFakeHost copies this test binary as the host's QEMU, makes a fake
// guest kernel and KVM device, and a backend (decide sets its probe deadline).
func newFakeHost(t *testing.T) *fakeHost {
	agent, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox not installed (apt-get install busybox-static): the ladder test packs it as the probe's agent")
	}
	dir := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache")) // keep fake answers out of the user's cache
	h := &fakeHost{t: t, qemu: filepath.Join(dir, "qemu-system-x86_64"), agent: agent,
		log: filepath.Join(dir, "qemu.log"), kvm: filepath.Join(dir, "kvm"),
		kernel: vmboot.Kernel{Image: filepath.Join(dir, "vmlinuz"), Version: "fake"}}
	self, err := os.ReadFile(os.Args[0])
	testutil.Must(t, err)
	testutil.Must(t, os.WriteFile(h.qemu, self, 0o755))
	testutil.Must(t, os.WriteFile(h.kernel.Image, []byte("kernel 1"), 0o644))
	testutil.Must(t, os.WriteFile(h.kvm, nil, 0o666))
	h.b, err = New(Options{Home: filepath.Join(dir, "home")})
	testutil.Must(t, err)
	h.b.kvmDevice = h.kvm
	t.Setenv("LIBBOX_FAKE_QEMU", "1")
	t.Setenv("LIBBOX_FAKE_QEMU_LOG", h.log)
	return h
}

// decide runs the ladder with the given rungs failing; it returns the rung,
// why, and the rungs QEMU was run on.
func (h *fakeHost) decide(fail string) (rung, string, []string, error) {
	h.t.Setenv("LIBBOX_FAKE_QEMU_FAIL", fail)
	_ = os.Remove(h.log)
	// The fake is this (race-instrumented) test binary, which a loaded
	// host may take seconds to start: a rung that hangs waits out a short
	// deadline, other decisions get a generous one.
	h.b.probeTimeout = 30 * time.Second
	if strings.Contains(fail, "=timeout") {
		h.b.probeTimeout = 8 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, why, err := h.b.accel(ctx, h.qemu, h.kernel, h.agent)
	var ran []string
	if b, rerr := os.ReadFile(h.log); rerr == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			f := strings.Fields(line)
			ran = append(ran, f[0])
			kvm := strings.HasSuffix(f[0], "-kvm")
			if cpu := argAfter(f[1:], "-cpu"); (kvm && cpu != "host") || (!kvm && cpu != "max") {
				h.t.Errorf("%s ran with -cpu %s", f[0], cpu)
			}
		}
	}
	return r, why, ran, err
}

// forget drops the cached answer (both cache files).
func (h *fakeHost) forget() {
	_ = os.Remove(filepath.Join(h.b.cache, "accel.json"))
	d, _ := os.UserCacheDir()
	_ = os.Remove(filepath.Join(d, "libbox", "accel.json"))
}

func argAfter(args []string, flag string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
}

func TestLadderDecisions(t *testing.T) {
	h := newFakeHost(t)
	for _, tc := range []struct {
		fail    string
		want    string
		ran     string
		whyHas  []string
		wantErr bool
	}{
		{fail: "", want: "microvm-kvm", ran: "microvm-kvm"},
		{fail: "microvm-kvm=msr", want: "pc-kvm", ran: "microvm-kvm pc-kvm",
			whyHas: []string{"microvm-kvm:", "failed to set MSR", "killed by signal aborted"}},
		{fail: "microvm-kvm=timeout,pc-kvm=crash", want: "pc-tcg", ran: "microvm-kvm pc-kvm",
			whyHas: []string{"microvm-kvm: did not reach the agent within 8s", "pc-kvm: QEMU killed by signal segmentation fault"}},
		{fail: "microvm-kvm=crash,pc-kvm=msr", want: "pc-tcg", ran: "microvm-kvm pc-kvm",
			whyHas: []string{"segmentation fault", "failed to set MSR"}},
	} {
		h.forget()
		r, why, ran, err := h.decide(tc.fail)
		if err != nil {
			t.Fatalf("%q: %v", tc.fail, err)
		}
		if r.Name != tc.want || strings.Join(ran, " ") != tc.ran {
			t.Errorf("%q: rung %s after %v, want %s after %s", tc.fail, r.Name, ran, tc.want, tc.ran)
		}
		for _, s := range tc.whyHas {
			if !strings.Contains(why, s) {
				t.Errorf("%q: why %q lacks %q", tc.fail, why, s)
			}
		}
		if tc.want == "microvm-kvm" && why != "" {
			t.Errorf("top rung with a why: %q", why)
		}
	}
}

func TestLadderCache(t *testing.T) {
	h := newFakeHost(t)
	h.forget()
	if r, _, ran, err := h.decide("microvm-kvm=msr"); err != nil || r.Name != "pc-kvm" || len(ran) != 2 {
		t.Fatalf("first decision %s after %v: %v", r.Name, ran, err)
	}
	// Cached: no probe runs even though microvm would work now.
	r, why, ran, err := h.decide("")
	if err != nil || r.Name != "pc-kvm" || len(ran) != 0 || !strings.Contains(why, "failed to set MSR") {
		t.Fatalf("cached decision %s (%q) after %v: %v", r.Name, why, ran, err)
	}
	// A fresh home on the same host reuses the user-wide answer.
	b2, err := New(Options{Home: t.TempDir()})
	testutil.Must(t, err)
	b2.kvmDevice = h.kvm
	h.b, b2 = b2, h.b
	if r, _, ran, err := h.decide(""); err != nil || r.Name != "pc-kvm" || len(ran) != 0 {
		t.Fatalf("fresh home: %s after %v: %v", r.Name, ran, err)
	}
	// A new guest kernel, then a new QEMU, invalidate the answer.
	testutil.Must(t, os.WriteFile(h.kernel.Image, []byte("kernel 2, longer"), 0o644))
	if r, _, ran, err := h.decide(""); err != nil || r.Name != "microvm-kvm" || len(ran) != 1 {
		t.Fatalf("after a kernel change: %s after %v: %v", r.Name, ran, err)
	}
	later := time.Now().Add(time.Hour)
	testutil.Must(t, os.Chtimes(h.qemu, later, later))
	if r, _, ran, err := h.decide("microvm-kvm=timeout"); err != nil || r.Name != "pc-kvm" || len(ran) != 2 {
		t.Fatalf("after a QEMU change: %s after %v: %v", r.Name, ran, err)
	}
	// What was forced is part of the key (a forced "kvm" ladder never
	// answers for an unforced one); so is the host kernel (uname).
	if hostKey(h.qemu, h.kernel.Image, "") == hostKey(h.qemu, h.kernel.Image, "kvm") {
		t.Error("the forced choice is not part of the key")
	}
}

func TestLadderForcedAndNoKVM(t *testing.T) {
	h := newFakeHost(t)
	h.forget()
	for _, tc := range []struct{ force, want string }{
		{"tcg", "pc-tcg"}, {"pc-kvm", "pc-kvm"}, {"microvm-kvm", "microvm-kvm"}, {"pc-tcg", "pc-tcg"},
	} {
		h.b.opts.Accel = tc.force
		r, why, ran, err := h.decide("microvm-kvm=crash,pc-kvm=crash")
		if err != nil || r.Name != tc.want || len(ran) != 0 || !strings.Contains(why, "forced") {
			t.Errorf("accel=%s: %s (%q) after %v: %v", tc.force, r.Name, why, ran, err)
		}
	}
	// kvm: the best KVM rung that works, never TCG.
	h.b.opts.Accel = "kvm"
	if r, _, ran, err := h.decide("microvm-kvm=msr"); err != nil || r.Name != "pc-kvm" || len(ran) != 2 {
		t.Errorf("accel=kvm, microvm aborts: %s after %v: %v", r.Name, ran, err)
	}
	h.forget()
	if _, _, _, err := h.decide("microvm-kvm=crash,pc-kvm=timeout"); !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "LIBBOX_ACCEL=tcg") {
		t.Errorf("accel=kvm, no KVM rung works: %v, want Unavailable saying how to fall back", err)
	}
	h.b.opts.Accel = "fast"
	if _, _, _, err := h.decide(""); !errdefs.IsInvalidArgument(err) {
		t.Errorf("accel=fast: %v, want InvalidArgument", err)
	}
	h.b.opts.Accel = ""
	// No usable /dev/kvm: TCG at once, saying how to fix it.
	testutil.Must(t, os.Remove(h.kvm))
	r, why, ran, err := h.decide("")
	if err != nil || r.Name != "pc-tcg" || len(ran) != 0 || !strings.Contains(why, "kvm_intel") {
		t.Errorf("no /dev/kvm: %s (%q) after %v: %v", r.Name, why, ran, err)
	}
	h.b.opts.Accel = "kvm"
	if _, _, _, err := h.decide(""); !errdefs.IsUnavailable(err) {
		t.Errorf("accel=kvm without /dev/kvm: %v, want Unavailable", err)
	}
}

// A real probe boot on the floor rung (the only one this machine may
// lack nothing for) reaches the real agent: the probe's machinery is the
// same on every rung.
func TestProbeRungReachesAgent(t *testing.T) {
	b, qemuBin, k := realBackend(t)
	initrd, err := vmboot.AgentInitramfs(b.cache, shared.agent, k)
	testutil.Must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*DefaultBootTimeout)
	defer cancel()
	d, err := b.probeRung(ctx, qemuBin, k, initrd, ladder[2], DefaultBootTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pc-tcg probe reached the agent in %s", d.Round(time.Millisecond))
}

// realBackend is a backend on a fresh home with this host's QEMU and
// kernel, and the test agent built.
func realBackend(t *testing.T) (*Backend, string, vmboot.Kernel) {
	requireVM(t)
	k := requireKernel(t)
	fixtures(t)
	qemuBin, err := vmboot.LookTool("qemu-system-x86_64", "qemu-system-x86")
	testutil.Must(t, err)
	b, err := New(Options{Home: t.TempDir()})
	testutil.Must(t, err)
	return b, qemuBin, k
}
