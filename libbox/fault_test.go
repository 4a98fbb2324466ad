package libbox_test

// The fault table's rows 2, 4, 5 and 6 for the Go API (docs/reliability.md).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/internal/testutil"
	"github.com/libbox/libbox/libbox"
)

// startHelperEnv makes the test binary a second host process: it starts
// the box named in it ("HOME|NAME"), prints "started PID" (the box's
// process) or "error CLASS MESSAGE", and exits when its stdin closes.
const startHelperEnv = "LIBBOX_TEST_START_HELPER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(startHelperEnv); spec != "" {
		os.Exit(startHelper(spec))
	}
	os.Exit(m.Run())
}

func startHelper(spec string) int {
	home, boxName, _ := strings.Cut(spec, "|")
	rt, err := libbox.Open(libbox.Options{Home: home, NoVMTemplates: true})
	if err != nil {
		fmt.Printf("error open %v\n", err)
		return 1
	}
	defer rt.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b, err := rt.Get(ctx, boxName)
	if err == nil {
		err = b.Start(ctx)
	}
	if err != nil {
		fmt.Printf("error %s %v\n", errdefs.CodeOf(err), err)
	} else {
		pid, _ := b.Info().Backend["pid"].(int)
		fmt.Printf("started %d\n", pid)
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// procAlive reports whether pid runs (a zombie does not).
func procAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// descendants lists the live processes below pid.
func descendants(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		parent[p], _ = strconv.Atoi(f[1])
	}
	var out []int
	for p := range parent {
		for q := parent[p]; q > 1; q = parent[q] {
			if q == pid {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// waitGone waits up to settleLimit for every pid to end.
func waitGone(t *testing.T, what string, pids []int) {
	t.Helper()
	deadline := time.Now().Add(settleLimit)
	for _, p := range pids {
		for procAlive(p) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: process %d still runs %s later", what, p, settleLimit)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestFaultStartRace is row 5 (sandbox): two host processes start one
// box at once; one starts it and the other attaches — both report the
// same box process, and only one runs.
func TestFaultStartRace(t *testing.T) {
	requireSandbox(t)
	startRace(t, libbox.IsolationSandbox, 3)
}

// TestFaultStartRaceVM is row 5 for VMs: never two QEMUs on one disk.
func TestFaultStartRaceVM(t *testing.T) {
	testutil.RequireQEMU(t)
	startRace(t, libbox.IsolationVM, 1)
}

func startRace(t *testing.T, isolation string, rounds int) {
	home := t.TempDir()
	removeAllOnCleanup(t, home)
	rt, err := libbox.Open(libbox.Options{Home: home, Logf: t.Logf, NoVMTemplates: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	ctx := ctxT(t, 10*time.Minute)
	b, err := rt.Create(ctx, libbox.BoxOptions{Name: "raced", Isolation: isolation, Detach: true})
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < rounds; round++ {
		t0 := time.Now()
		type answer struct {
			line string
			in   io.WriteCloser
			cmd  *exec.Cmd
		}
		answers := make([]answer, 2)
		var wg sync.WaitGroup
		for i := range answers {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), startHelperEnv+"="+home+"|raced")
			in, _ := cmd.StdinPipe()
			out, _ := cmd.StdoutPipe()
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			answers[i].in, answers[i].cmd = in, cmd
			wg.Add(1)
			go func() {
				defer wg.Done()
				line, _ := bufio.NewReader(out).ReadString('\n')
				answers[i].line = strings.TrimSpace(line)
			}()
		}
		wg.Wait()
		settle := time.Since(t0)
		for _, a := range answers {
			a.in.Close()
			_ = a.cmd.Wait()
		}
		var pids []string
		for _, a := range answers {
			if strings.HasPrefix(a.line, "started ") {
				pids = append(pids, strings.TrimPrefix(a.line, "started "))
			} else if !strings.HasPrefix(a.line, "error FailedPrecondition ") {
				t.Fatalf("round %d: a start answered %q", round, a.line)
			}
		}
		if len(pids) == 0 || (len(pids) == 2 && pids[0] != pids[1]) {
			t.Fatalf("round %d: two starts gave box processes %v: two instances on one disk", round, pids)
		}
		pid, _ := strconv.Atoi(pids[0])
		if !procAlive(pid) {
			t.Fatalf("round %d: the box process %d is gone after the starters left (detached box)", round, pid)
		}
		faultRow(t, 5, "two processes start one box ("+isolation+")", settle)
		if err := b.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		waitGone(t, "after stop", []int{pid})
	}
}

// killUnderLoad starts n long execs, SIGKILLs the box's main process (the
// agent, or QEMU) from the host, and checks that every Wait fails with
// Unavailable, the box becomes stopped and none of its processes remains,
// within the fault table's bound (row 2). It returns the settle time.
func killUnderLoad(t *testing.T, ctx context.Context, b *libbox.Box, n int, backend string) {
	t.Helper()
	procs := make([]*libbox.Process, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := b.Exec(ctx, libbox.Command{Args: []string{"sleep", "100"}})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			procs[i] = p
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	pid, _ := b.Info().Backend["pid"].(int)
	if pid <= 0 {
		t.Fatalf("no box process pid in %v", b.Info().Backend)
	}
	boxProcs := append(descendants(pid), pid)
	t0 := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	within(t, settleLimit, "every Wait after the box's process was killed", func() {
		for _, p := range procs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := p.Wait(ctx); !errors.Is(err, libbox.ErrUnavailable) {
					t.Errorf("wait after the box died: %v", err)
				}
			}()
		}
		wg.Wait()
		for b.Info().State != libbox.StateStopped {
			time.Sleep(5 * time.Millisecond)
		}
	})
	settle := time.Since(t0)
	waitGone(t, "the killed box's processes", boxProcs)
	faultRow(t, 2, fmt.Sprintf("SIGKILL of the box's process under %d execs (%s)", n, backend), settle)
}

// TestFaultCycles is row 6 (sandbox): create/exec/remove cycles leave no
// fd, goroutine, process or box directory behind.
func TestFaultCycles(t *testing.T) {
	requireSandbox(t)
	// The 1,000 cycles take minutes under -race on two cores: CI
	// runs 200 (already far past any warm-up), LIBBOX_FAULT_CYCLES=1000
	// the full row.
	cycles := 200
	if n, err := strconv.Atoi(os.Getenv("LIBBOX_FAULT_CYCLES")); err == nil && n > 20 {
		cycles = n
	} else if testing.Short() {
		cycles = 50
	}
	home := t.TempDir()
	removeAllOnCleanup(t, home)
	rt := openRT(t, home)
	ctx := ctxT(t, 10*time.Minute)
	cycle := func(i int) {
		b, err := rt.Create(ctx, libbox.BoxOptions{Isolation: libbox.IsolationSandbox})
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if err := b.Start(ctx); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		r, err := b.Run(ctx, libbox.Command{Args: []string{"echo", strconv.Itoa(i)}})
		if err != nil || string(r.Stdout) != strconv.Itoa(i)+"\n" {
			t.Fatalf("cycle %d: %q %v", i, r.Stdout, err)
		}
		if err := rt.Remove(ctx, b.ID(), true); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
	}
	const warm = 10
	for i := 0; i < warm; i++ {
		cycle(i)
	}
	type counts struct{ fds, goroutines, procs, boxes int }
	measure := func() counts {
		ents, _ := os.ReadDir(filepath.Join(home, "boxes"))
		return counts{testutil.FDs(), runtime.NumGoroutine(), len(descendants(os.Getpid())), len(ents)}
	}
	before := measure()
	t0 := time.Now()
	// Four at a time (a cycle mostly waits: for the agent, for unmounts);
	// every cycle is still a whole create/start/exec/remove.
	const workers = 4
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := warm + w; i < cycles; i += workers {
				if t.Failed() {
					return
				}
				cycle(i)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	elapsed := time.Since(t0)
	var after counts
	t1 := time.Now()
	for {
		after = measure()
		if after.fds <= before.fds && after.goroutines <= before.goroutines && after.procs <= before.procs && after.boxes <= before.boxes {
			break
		}
		if time.Since(t1) > settleLimit {
			t.Fatalf("after %d cycles, %s later: %+v, before them %+v (fds, goroutines, processes, box dirs)", cycles-warm, settleLimit, after, before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	settle := time.Since(t1)
	t.Logf("%d cycles in %s (%s a cycle, %d at a time); before %+v after %+v", cycles-warm, elapsed, elapsed/time.Duration(cycles-warm), workers, before, after)
	faultRow(t, 6, fmt.Sprintf("%d create/exec/remove cycles, counts back to the baseline (sandbox)", cycles), settle)
}

// TestFaultFullHome is row 4 (sandbox): with the libbox home on a full
// tmpfs, create, copy-in and pull fail with a clear error; List works, a
// running box keeps running, and once space is back a stopped box starts.
func TestFaultFullHome(t *testing.T) {
	requireSandbox(t)
	testutil.RequireRoot(t, "mounting a small tmpfs as the libbox home")
	home := t.TempDir()
	if err := unix.Mount("tmpfs", home, "tmpfs", 0, "size=48m,mode=0755"); err != nil {
		t.Fatalf("mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(home, unix.MNT_DETACH) })
	removeAllOnCleanup(t, home)
	rt := openRT(t, home)
	ctx := ctxT(t, 5*time.Minute)
	running := startBox(t, rt, libbox.BoxOptions{})
	stopped, err := rt.Create(ctx, libbox.BoxOptions{Isolation: libbox.IsolationSandbox})
	if err != nil {
		t.Fatal(err)
	}
	archive := imageArchive(t)
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(home, "filler")
	fillUp(t, filler)

	full := func(what string, call func() error) {
		t.Helper()
		var err error
		settle := within(t, settleLimit, what+" on a full home", func() { err = call() })
		if err == nil {
			t.Fatalf("%s on a full home succeeded", what)
		}
		if !errors.Is(err, libbox.ErrFailedPrecondition) || !strings.Contains(err.Error(), "no space left") {
			t.Errorf("%s on a full home: want FailedPrecondition saying \"no space left\", got %v", what, err)
		}
		faultRow(t, 4, what+" on a full home fails (sandbox)", settle)
	}
	full("create", func() error {
		_, err := rt.Create(ctx, libbox.BoxOptions{Isolation: libbox.IsolationSandbox})
		return err
	})
	full("copy-in", func() error { _, err := running.CopyIn(ctx, big, "/root/big"); return err })
	full("pull", func() error { _, err := rt.PullImage(ctx, "docker-archive:"+archive, nil); return err })

	list, err := rt.List(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("List on a full home: %d boxes, %v", len(list), err)
	}
	if got := sh(t, running, "echo still"); got != "still\n" {
		t.Fatalf("running box on a full home: %q", got)
	}
	settle := within(t, time.Minute, "start on a full home", func() {
		if err := stopped.Start(ctx); err != nil {
			t.Errorf("start on a full home: %v", err)
		}
	})
	if got := sh(t, stopped, "echo started"); got != "started\n" {
		t.Fatalf("box started after the fill: %q", got)
	}
	faultRow(t, 4, "start of a created box on a full home (sandbox)", settle)
}

// fillUp writes to p until the file system is full.
func fillUp(t *testing.T, p string) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}

// imageArchive writes a docker-archive of a one-layer image (4 MiB of
// random data) for this host's platform.
func imageArchive(t *testing.T) string {
	t.Helper()
	layer, err := random.Layer(4<<20, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: "linux", Architecture: runtime.GOARCH, RootFS: v1.RootFS{Type: "layers"}})
	if err == nil {
		img, err = mutate.AppendLayers(img, layer)
	}
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "image.tar")
	tag, _ := name.NewTag("example/full:v1")
	if err := tarball.WriteToFile(p, tag, img); err != nil {
		t.Fatal(err)
	}
	return p
}
