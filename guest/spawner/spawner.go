// Package spawner starts every process of the agent from one goroutine
// locked to its own OS thread, one spawn at a time under the spawn lock,
// and reaps every child (its own and orphans) without stealing exits.
//
// gRPC handlers never fork: they hand a Request to Spawn and wait for the
// result. The spawner never changes process-global state (no chdir, setns
// or unshare): the working directory, root, credentials, process group and
// controlling terminal are set per child through SysProcAttr.
//
// Reaping follows one rule: a child is started under the read side of the
// spawn lock and registered before that lock is released; the reaper waits
// for children only under the write side. So an exit can never be reaped
// before its pid is known, and it is delivered to exactly the spawn that
// made it. The table of running children has its own mutex, taken by every
// reader and writer of it: the spawn lock orders forks against reaping, it
// does not guard the table (readers such as Running share its read side
// with the spawn that writes the table).
package spawner

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Request describes one child.
type Request struct {
	Path  string   // absolute path of the executable, as seen from Root
	Args  []string // argv, including argv[0]
	Env   []string
	Dir   string // working directory, as seen from Root
	Root  string // chroot into this directory first; "" for none
	Cred  *syscall.Credential
	Files []uintptr // the child's fds 0, 1, 2 (and more)
	TTY   bool      // new session with Files[0] as controlling terminal
	// Times, when not nil, is filled in on the spawn thread (measuring).
	Times *Times
}

// Times says when a spawn's steps happened.
type Times struct {
	Dequeued time.Time // the spawn thread took the request
	Spawned  time.Time // fork/exec returned
}

// Exit is how a child ended.
type Exit struct {
	Pid    int
	Status syscall.WaitStatus
	At     time.Time
}

type job struct {
	req  *Request
	done chan result
}

type result struct {
	pid  int
	exit chan Exit
	err  error
}

// Spawner owns the spawn thread and the reaper.
type Spawner struct {
	jobs chan job
	quit chan struct{}
	wg   sync.WaitGroup
	sigs chan os.Signal

	// mu is the spawn lock: spawns hold it for reading, the reaper for
	// writing. It orders forks against reaping and guards no field.
	mu sync.RWMutex

	// tableMu guards the table of running children; it is taken inside mu
	// (by the spawn and the reaper) or alone (by readers).
	tableMu sync.Mutex
	// exits maps the pid of every running child started here to the
	// channel its exit is delivered on. Guarded by tableMu.
	exits map[int]chan Exit
	// orphans counts children reaped that were not ours. Guarded by tableMu.
	orphans int

	closeOnce sync.Once
}

// New starts the spawn thread and the reaper. Close stops them. setup, if
// not nil, runs first on the spawn thread: per-thread attributes it sets
// (no_new_privs, the capability bounding set) are inherited by every child.
func New(setup func() error) (*Spawner, error) { return NewGated(setup, nil) }

// NewGated is New with a gate: the first spawn waits until gate yields a
// value (work the boot left running that must end before any child
// exists); when that value is an error, every spawn fails with it. A nil
// gate is open.
func NewGated(setup func() error, gate <-chan error) (*Spawner, error) {
	s := &Spawner{
		jobs:  make(chan job),
		quit:  make(chan struct{}),
		sigs:  make(chan os.Signal, 1),
		exits: make(map[int]chan Exit),
	}
	ready := make(chan error, 1)
	s.wg.Add(1)
	go s.spawnLoop(setup, gate, ready)
	if err := <-ready; err != nil {
		s.wg.Wait()
		return nil, err
	}
	signal.Notify(s.sigs, syscall.SIGCHLD)
	s.wg.Add(1)
	go s.reapLoop()
	return s, nil
}

// Spawn starts a child on the spawn thread. The returned channel receives
// its exit exactly once.
func (s *Spawner) Spawn(ctx context.Context, req *Request) (int, <-chan Exit, error) {
	j := job{req: req, done: make(chan result, 1)}
	select {
	case s.jobs <- j:
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	case <-s.quit:
		return 0, nil, errClosed
	}
	// The spawn thread always answers a job it took.
	r := <-j.done
	return r.pid, r.exit, r.err
}

var errClosed = errors.New("spawner closed")

func (s *Spawner) spawnLoop(setup func() error, gate <-chan error, ready chan<- error) {
	defer s.wg.Done()
	// This thread is never unlocked, so it is never reused by other
	// goroutines nor exits while children started from it live
	// (Pdeathsig is tied to the thread that forked).
	runtime.LockOSThread()
	restoreTimerSlack()
	if setup != nil {
		if err := setup(); err != nil {
			// The thread's attributes are half-set: let it exit with us.
			ready <- err
			return
		}
	}
	ready <- nil
	var gateErr error
	for {
		select {
		case j := <-s.jobs:
			if gate != nil {
				select {
				case gateErr = <-gate:
					gate = nil
				case <-s.quit:
					j.done <- result{err: errClosed}
					return
				}
			}
			if gateErr != nil {
				j.done <- result{err: gateErr}
				continue
			}
			j.done <- s.start(j.req)
		case <-s.quit:
			return
		}
	}
}

func (s *Spawner) start(req *Request) result {
	if req.Times != nil {
		req.Times.Dequeued = time.Now()
		defer func() { req.Times.Spawned = time.Now() }()
	}
	attr := &syscall.ProcAttr{
		Dir:   req.Dir,
		Env:   req.Env,
		Files: req.Files,
		Sys: &syscall.SysProcAttr{
			Chroot:     req.Root,
			Credential: req.Cred,
			Pdeathsig:  syscall.SIGKILL,
		},
	}
	if req.TTY {
		attr.Sys.Setsid = true
		attr.Sys.Setctty = true
		attr.Sys.Ctty = 0
	} else {
		attr.Sys.Setpgid = true
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	pid, err := syscall.ForkExec(req.Path, req.Args, attr)
	if err != nil {
		return result{err: err}
	}
	ch := make(chan Exit, 1)
	s.tableMu.Lock()
	s.exits[pid] = ch
	s.tableMu.Unlock()
	return result{pid: pid, exit: ch}
}

func (s *Spawner) reapLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.sigs:
			s.reap()
		case <-s.quit:
			s.reap()
			return
		}
	}
}

func (s *Spawner) reap() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		s.tableMu.Lock()
		ch, ok := s.exits[pid]
		if ok {
			delete(s.exits, pid)
		} else {
			s.orphans++
		}
		s.tableMu.Unlock()
		if ok {
			ch <- Exit{Pid: pid, Status: ws, At: time.Now()} // buffered: never blocks
		}
	}
}

// Running reports the number of children started here that have not exited.
func (s *Spawner) Running() int {
	s.tableMu.Lock()
	defer s.tableMu.Unlock()
	return len(s.exits)
}

// Pids returns the pids of the running children started here.
func (s *Spawner) Pids() []int {
	s.tableMu.Lock()
	defer s.tableMu.Unlock()
	out := make([]int, 0, len(s.exits))
	for pid := range s.exits {
		out = append(out, pid)
	}
	return out
}

// Close stops the spawn thread and the reaper. Running children are not
// killed (the agent's shutdown does that first). Idempotent.
func (s *Spawner) Close() {
	s.closeOnce.Do(func() {
		signal.Stop(s.sigs)
		close(s.quit)
		s.wg.Wait()
	})
}

// startSlack is the timer slack this process started with, read on the
// main thread before anything could change it (package initialization runs
// there): what children get.
var startSlack, _ = unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)

// restoreTimerSlack gives the calling thread the timer slack the process
// started with. Children inherit their parent thread's slack: a coarser one
// the agent sets for its own threads must not reach box processes.
func restoreTimerSlack() {
	if startSlack > 0 {
		_ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(startSlack), 0, 0, 0)
	}
}

// KillGroup sends sig to the process group led by pid.
func KillGroup(pid int, sig syscall.Signal) error {
	if pid <= 0 {
		return syscall.ESRCH
	}
	return unix.Kill(-pid, sig)
}

// SetSubreaper makes orphans of our children come to us (when not PID 1).
func SetSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}
