package seccomp

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A probe makes one call with arguments that change nothing even when the
// call is allowed, and reports its errno (0 for success).
type probe struct {
	name string
	call func() unix.Errno
}

func raw(nr uintptr, args ...uintptr) func() unix.Errno {
	return func() unix.Errno {
		a := make([]uintptr, 6)
		copy(a, args)
		_, _, e := unix.Syscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5])
		return e
	}
}

func forkExec(cloneflags uintptr) func() unix.Errno {
	return func() unix.Errno {
		pid, err := syscall.ForkExec("/bin/true", []string{"true"}, &syscall.ProcAttr{
			Sys: &syscall.SysProcAttr{Cloneflags: cloneflags},
		})
		if err != nil {
			var e syscall.Errno
			if errors.As(err, &e) {
				return e
			}
			return unix.EIO
		}
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, 0, nil)
		return 0
	}
}

var empty = []byte{0}
var emptyPtr = uintptr(unsafe.Pointer(&empty[0]))

// deniedProbes must fail with the rule's errno under the filter.
var deniedProbes = []probe{
	{"keyctl", raw(unix.SYS_KEYCTL, 9999)},
	{"add_key", raw(unix.SYS_ADD_KEY)},
	{"bpf", raw(unix.SYS_BPF, 9999)},
	{"perf_event_open", raw(unix.SYS_PERF_EVENT_OPEN)},
	{"init_module", raw(unix.SYS_INIT_MODULE)},
	{"finit_module", raw(unix.SYS_FINIT_MODULE, ^uintptr(0))},
	{"kexec_load", raw(unix.SYS_KEXEC_LOAD, 0, 0, 0, ^uintptr(0))},
	{"reboot", raw(unix.SYS_REBOOT, 1, 2, 3)},
	{"mount", raw(unix.SYS_MOUNT)},
	{"umount2", raw(unix.SYS_UMOUNT2, emptyPtr)},
	{"pivot_root", raw(unix.SYS_PIVOT_ROOT, emptyPtr, emptyPtr)},
	{"open_tree", raw(unix.SYS_OPEN_TREE, ^uintptr(0), emptyPtr)},
	{"setns", raw(unix.SYS_SETNS, ^uintptr(0))},
	{"open_by_handle_at", raw(unix.SYS_OPEN_BY_HANDLE_AT, ^uintptr(0))},
	{"clock_settime", raw(unix.SYS_CLOCK_SETTIME, 9999)},
	{"swapon", raw(unix.SYS_SWAPON, emptyPtr)},
	{"io_uring_setup", raw(unix.SYS_IO_URING_SETUP, 0)},
	{"unshare CLONE_NEWUSER", raw(unix.SYS_UNSHARE, unix.CLONE_NEWUSER)},
	{"unshare CLONE_NEWNS", raw(unix.SYS_UNSHARE, unix.CLONE_NEWNS)},
	{"unshare CLONE_NEWNET", raw(unix.SYS_UNSHARE, unix.CLONE_NEWNET)},
	{"clone CLONE_NEWUSER", forkExec(unix.CLONE_NEWUSER)},
	{"clone CLONE_NEWPID", forkExec(unix.CLONE_NEWPID)},
	{"clone3", raw(unix.SYS_CLONE3, 0, 0)},
}

// allowedProbes must keep their unfiltered result under the filter.
var allowedProbes = []probe{
	{"getpid", raw(unix.SYS_GETPID)},
	{"unshare 0", raw(unix.SYS_UNSHARE, 0)},
	{"clone (fork+exec)", forkExec(0)},
	{"openat", func() unix.Errno {
		fd, err := unix.Open("/proc/self/status", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err.(unix.Errno)
		}
		unix.Close(fd)
		return 0
	}},
	{"sethostname (capability check, not seccomp)", raw(unix.SYS_SETHOSTNAME, 0, 0)},
}

const childEnv = "LIBBOX_SECCOMP_TEST_CHILD"

// TestMain runs the probes in a child process when asked: the filter is
// per thread and permanent, so it never touches the test process.
func TestMain(m *testing.M) {
	mode := os.Getenv(childEnv)
	if mode == "" {
		os.Exit(m.Run())
	}
	runtime.LockOSThread()
	if mode != "control" {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		if err := Install(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
	}
	if mode == "x32" {
		// getpid through the x32 ABI: the filter kills the process.
		_, _, e := unix.RawSyscall(x32Bit|unix.SYS_GETPID, 0, 0, 0)
		fmt.Println("survived", e)
		os.Exit(0)
	}
	out := map[string]int{}
	for _, p := range append(deniedProbes, allowedProbes...) {
		out[p.name] = int(p.call())
	}
	json.NewEncoder(os.Stdout).Encode(out)
	os.Exit(0)
}

func runChild(t *testing.T, mode string) (map[string]unix.Errno, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		return nil, err
	}
	var raw map[string]int
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("child output %q: %w", b, err)
	}
	out := map[string]unix.Errno{}
	for k, v := range raw {
		out[k] = unix.Errno(v)
	}
	return out, nil
}

func TestFilterDeniesAndAllows(t *testing.T) {
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skip("the filter has rules for amd64 and arm64 only")
	}
	control, err := runChild(t, "control")
	if err != nil {
		t.Fatal(err)
	}
	filtered, err := runChild(t, "filter")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]unix.Errno{}
	for _, r := range Rules() {
		want[r.Name] = r.Errno
	}
	for _, p := range deniedProbes {
		rule, _, _ := strings.Cut(p.name, " ")
		w, ok := want[rule]
		if !ok {
			t.Errorf("%s: no rule", p.name)
			continue
		}
		t.Logf("%-24s filtered %-32v unfiltered %v", p.name, filtered[p.name], control[p.name])
		if filtered[p.name] != w {
			t.Errorf("%s: got %v under the filter, want %v (unfiltered: %v)", p.name, filtered[p.name], w, control[p.name])
		}
		// The probe proves something only if the call fails otherwise
		// without the filter (or is refused by a missing privilege).
		if control[p.name] == w && os.Geteuid() == 0 {
			t.Errorf("%s: fails with %v without the filter too", p.name, w)
		}
	}
	for _, p := range allowedProbes {
		if filtered[p.name] != control[p.name] {
			t.Errorf("%s: got %v under the filter, %v without it", p.name, filtered[p.name], control[p.name])
		}
	}
	if control["getpid"] != 0 || control["clone (fork+exec)"] != 0 {
		t.Errorf("control probes failed: %v", control)
	}
}

// TestForeignABIKilled: a call through the x32 ABI kills the process.
func TestForeignABIKilled(t *testing.T) {
	if x32Bit == 0 {
		t.Skip("no second ABI on this architecture")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=x32")
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child survived an x32 call: %q %v", out, err)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
		t.Fatalf("child ended with %v, want SIGSYS", ws)
	}
}

func TestProgramShape(t *testing.T) {
	p := Program(Rules())
	if len(p) > 4096 {
		t.Fatalf("program has %d instructions, the kernel takes at most 4096", len(p))
	}
	last := p[len(p)-1]
	if last.Code != unix.BPF_RET|unix.BPF_K || last.K != unix.SECCOMP_RET_ALLOW {
		t.Fatalf("program does not end in allow: %+v", last)
	}
	seen := map[uint32]string{}
	for _, r := range Rules() {
		if prev, ok := seen[r.Nr]; ok {
			t.Errorf("%s and %s share syscall number %d", prev, r.Name, r.Nr)
		}
		seen[r.Nr] = r.Name
	}
}
