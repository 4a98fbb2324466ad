package spawner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libbox/libbox/internal/testutil"
)

// The spawner reaps every child of this process (wait4(-1)); these tests
// start processes through it only. As a subreaper the test process also
// gets the orphans of its children, as the agent does as PID 1.
func TestMain(m *testing.M) {
	if err := SetSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, "subreaper:", err)
		os.Exit(1)
	}
	testutil.Main(m, nil)
}

func newSpawner(t *testing.T) *Spawner {
	t.Helper()
	testutil.RequireLinux(t)
	s, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// sh spawns /bin/sh -c script with stdin /dev/null and stdout to a pipe;
// it returns the pid, the exit channel and a function that reads all of
// stdout.
func sh(t *testing.T, s *Spawner, req Request, script string) (int, <-chan Exit, func() string) {
	t.Helper()
	null, err := os.Open(os.DevNull)
	testutil.Must(t, err)
	defer null.Close()
	r, w, err := os.Pipe()
	testutil.Must(t, err)
	req.Path, req.Args = "/bin/sh", []string{"sh", "-c", script}
	req.Files = []uintptr{null.Fd(), w.Fd(), w.Fd()}
	pid, exit, err := s.Spawn(testutil.Ctx(t, 10*time.Second), &req)
	w.Close()
	if err != nil {
		r.Close()
		t.Fatalf("spawn %q: %v", script, err)
	}
	read := func() string {
		defer r.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				return b.String()
			}
		}
	}
	return pid, exit, read
}

// wait returns the exit delivered on ch, failing after 10 s.
func wait(t *testing.T, ch <-chan Exit) Exit {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no exit delivered within 10 s")
		return Exit{}
	}
}

// TestSpawnAndExit: the child runs with the request's directory and its own
// process group, and its exit is delivered once, to its spawn.
func TestSpawnAndExit(t *testing.T) {
	s := newSpawner(t)
	dir := t.TempDir()
	var times Times
	pid, ch, read := sh(t, s, Request{Dir: dir, Env: []string{"GREETING=hi"}, Times: &times},
		`echo "$GREETING $(pwd) $$"; cut -d' ' -f5 /proc/self/stat; exit 3`)
	out := read()
	e := wait(t, ch)
	if e.Pid != pid || !e.Status.Exited() || e.Status.ExitStatus() != 3 {
		t.Fatalf("exit %+v, want pid %d status 3", e, pid)
	}
	// The pgid printed by cut (a child of sh) is sh's own pid.
	want := fmt.Sprintf("hi %s %d\n%d\n", dir, pid, pid)
	if out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	if times.Dequeued.IsZero() || times.Spawned.Before(times.Dequeued) {
		t.Errorf("times %+v", times)
	}
	select {
	case e := <-ch:
		t.Errorf("a second exit delivered: %+v", e)
	case <-time.After(50 * time.Millisecond):
	}
	if n := s.Running(); n != 0 {
		t.Errorf("Running = %d after the exit", n)
	}
}

func TestSpawnErrors(t *testing.T) {
	s := newSpawner(t)
	ctx := testutil.Ctx(t, 10*time.Second)
	plain := t.TempDir() + "/plain"
	testutil.Must(t, os.WriteFile(plain, []byte("echo hi\n"), 0o644))
	for _, tc := range []struct {
		name string
		req  Request
		want error
	}{
		{"missing program", Request{Path: "/nonexistent/prog", Args: []string{"prog"}}, syscall.ENOENT},
		{"not executable", Request{Path: plain, Args: []string{"plain"}}, syscall.EACCES},
		{"missing dir", Request{Path: "/bin/true", Args: []string{"true"}, Dir: "/nonexistent/dir"}, syscall.ENOENT},
	} {
		pid, ch, err := s.Spawn(ctx, &tc.req)
		if !errors.Is(err, tc.want) || pid != 0 || ch != nil {
			t.Errorf("%s: pid %d, %v; want %v", tc.name, pid, err, tc.want)
		}
	}
	if n := s.Running(); n != 0 {
		t.Errorf("Running = %d after failed spawns", n)
	}
}

// TestConcurrentSpawns: many goroutines spawn at once; each gets the exit
// of its own child (told apart by exit code), and the table empties.
func TestConcurrentSpawns(t *testing.T) {
	s := newSpawner(t)
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pid, ch, err := s.Spawn(testutil.Ctx(t, 30*time.Second), &Request{Path: "/bin/sh", Args: []string{"sh", "-c", "exit " + strconv.Itoa(i)}})
			if err != nil {
				errs <- err
				return
			}
			select {
			case e := <-ch:
				if e.Pid != pid || e.Status.ExitStatus() != i {
					errs <- fmt.Errorf("spawn %d (pid %d) got exit %+v", i, pid, e)
				}
			case <-time.After(30 * time.Second):
				errs <- fmt.Errorf("spawn %d: no exit", i)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if r := s.Running(); r != 0 {
		t.Errorf("Running = %d after every exit", r)
	}
}

// TestOrphansReaped: a grandchild left behind by its parent is reaped as
// an orphan (no zombie), and does not disturb the delivery of our own
// child's exit.
func TestOrphansReaped(t *testing.T) {
	s := newSpawner(t)
	s.tableMu.Lock()
	before := s.orphans
	s.tableMu.Unlock()
	_, ch, read := sh(t, s, Request{}, `sleep 0.2 </dev/null >/dev/null 2>&1 & echo $!`)
	out := read()
	if e := wait(t, ch); e.Status.ExitStatus() != 0 {
		t.Fatalf("parent exit %+v", e)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("orphan pid %q", out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := os.Stat("/proc/" + strconv.Itoa(orphan)) // a zombie keeps its /proc entry
		s.tableMu.Lock()
		reaped := s.orphans - before
		s.tableMu.Unlock()
		if err != nil && reaped >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphan %d not reaped after 10 s (orphans reaped: %d, /proc entry: %v)", orphan, reaped, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSetupAndClose(t *testing.T) {
	testutil.RequireLinux(t)
	if _, err := New(func() error { return errors.New("no capabilities here") }); err == nil || err.Error() != "no capabilities here" {
		t.Fatalf("failed setup: %v", err)
	}
	s, err := New(nil)
	testutil.Must(t, err)
	s.Close()
	s.Close() // idempotent
	if _, _, err := s.Spawn(context.Background(), &Request{Path: "/bin/true", Args: []string{"true"}}); !errors.Is(err, errClosed) {
		t.Fatalf("spawn after Close: %v", err)
	}
}

// The gate holds the first spawn until it yields; an error it yields fails
// every spawn; Close releases a spawn waiting at the gate.
func TestGate(t *testing.T) {
	testutil.RequireLinux(t)
	gate := make(chan error, 1)
	s, err := NewGated(nil, gate)
	testutil.Must(t, err)
	t.Cleanup(s.Close)
	type res struct {
		pid int
		err error
	}
	done := make(chan res, 1)
	go func() {
		pid, exit, err := s.Spawn(testutil.Ctx(t, 30*time.Second), &Request{Path: "/bin/true", Args: []string{"true"}})
		if err == nil {
			<-exit
		}
		done <- res{pid, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("spawned through a closed gate: %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
	gate <- nil
	if r := <-done; r.err != nil || r.pid <= 0 {
		t.Fatalf("spawn after the gate opened: %+v", r)
	}

	failed := make(chan error, 1)
	failed <- errors.New("reserve threads: no")
	s2, err := NewGated(nil, failed)
	testutil.Must(t, err)
	t.Cleanup(s2.Close)
	for i := 0; i < 2; i++ {
		if _, _, err := s2.Spawn(context.Background(), &Request{Path: "/bin/true", Args: []string{"true"}}); err == nil || err.Error() != "reserve threads: no" {
			t.Fatalf("spawn %d through a failed gate: %v", i, err)
		}
	}

	s3, err := NewGated(nil, make(chan error))
	testutil.Must(t, err)
	waiting := make(chan error, 1)
	go func() {
		_, _, err := s3.Spawn(context.Background(), &Request{Path: "/bin/true", Args: []string{"true"}})
		waiting <- err
	}()
	time.Sleep(20 * time.Millisecond) // let it reach the gate (either way Close must release it)
	s3.Close()
	if err := <-waiting; !errors.Is(err, errClosed) {
		t.Fatalf("spawn waiting at the gate after Close: %v", err)
	}
}
