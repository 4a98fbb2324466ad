// Command probe tries one attack per argument from inside a sandbox box and
// prints one JSON object per attack: what happened, never more. It is built
// static by the sandbox attack tests and run in a box; it must never do
// harm when an attack unexpectedly succeeds (writes are opens for writing,
// loads and mounts use arguments that change nothing).
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Result is one attack's outcome.
type Result struct {
	Attack string `json:"attack"`
	Errno  string `json:"errno,omitempty"` // the error name when the attack failed
	Data   string `json:"data,omitempty"`  // what a read returned (truncated)
}

func errName(err error) string {
	var e unix.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
	}
	return err.Error()
}

func openWrite(path string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

func read(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if fi.IsDir() {
		names, err := f.Readdirnames(-1)
		return strings.Join(names, ","), err
	}
	b := make([]byte, 64)
	n, err := f.Read(b)
	if n > 0 {
		return strconv.Quote(string(b[:n])), nil
	}
	if err != nil && err.Error() != "EOF" {
		return "", err
	}
	return "", nil
}

func sys(nr uintptr, a ...uintptr) error {
	args := make([]uintptr, 6)
	copy(args, a)
	_, _, e := unix.Syscall6(nr, args[0], args[1], args[2], args[3], args[4], args[5])
	if e != 0 {
		return e
	}
	return nil
}

func cstr(s string) uintptr { b, _ := unix.BytePtrFromString(s); return uintptr(unsafe.Pointer(b)) }

func forkExec(flags uintptr) error {
	pid, err := syscall.ForkExec("/proc/self/exe", []string{"probe"}, &syscall.ProcAttr{Sys: &syscall.SysProcAttr{Cloneflags: flags}})
	if err == nil {
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, 0, nil)
	}
	return err
}

var attacks = map[string]func(arg string) (string, error){
	"write": func(p string) (string, error) { return "", openWrite(p) },
	"read":  read,
	"keyctl": func(string) (string, error) {
		return "", sys(unix.SYS_KEYCTL, unix.KEYCTL_GET_KEYRING_ID, ^uintptr(2), 0)
	},
	"add_key": func(string) (string, error) {
		return "", sys(unix.SYS_ADD_KEY, cstr("user"), cstr("probe"), cstr("x"), 1, ^uintptr(3))
	},
	"bpf": func(string) (string, error) {
		attr := make([]byte, 128) // BPF_MAP_CREATE of an array map with one entry
		*(*uint32)(unsafe.Pointer(&attr[0])) = 2
		*(*uint32)(unsafe.Pointer(&attr[4])) = 4
		*(*uint32)(unsafe.Pointer(&attr[8])) = 4
		*(*uint32)(unsafe.Pointer(&attr[12])) = 1
		err := sys(unix.SYS_BPF, 0, uintptr(unsafe.Pointer(&attr[0])), uintptr(len(attr)))
		return "", err
	},
	"perf_event_open": func(string) (string, error) {
		attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_CPU_CLOCK, Size: uint32(unsafe.Sizeof(unix.PerfEventAttr{}))}
		fd, err := unix.PerfEventOpen(&attr, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
		if err == nil {
			unix.Close(fd)
		}
		return "", err
	},
	// An empty image: the kernel refuses it even when loading is allowed.
	"init_module": func(string) (string, error) { return "", unix.InitModule(nil, "") },
	"mount": func(string) (string, error) {
		return "", unix.Mount("probe", "/tmp", "tmpfs", unix.MS_RDONLY, "size=4k")
	},
	"clone":       func(f string) (string, error) { return "", forkExec(nsFlag(f)) },
	"ptrace":      func(p string) (string, error) { return "", ptraceAttach(p) },
	"sethostname": func(h string) (string, error) { return "", unix.Sethostname([]byte(h)) },
	"threadbomb":  threadBomb,
	"fill":        fill,
	"alloc":       alloc,
	"settimeofday": func(string) (string, error) {
		tv := unix.Timeval{}
		_ = unix.Gettimeofday(&tv)
		return "", unix.Settimeofday(&tv)
	},
}

func nsFlag(f string) uintptr {
	switch f {
	case "user":
		return unix.CLONE_NEWUSER
	case "mount":
		return unix.CLONE_NEWNS
	case "net":
		return unix.CLONE_NEWNET
	case "pid":
		return unix.CLONE_NEWPID
	}
	return 0
}

func ptraceAttach(p string) error {
	pid, err := strconv.Atoi(p)
	if err != nil {
		return err
	}
	if err := unix.PtraceAttach(pid); err != nil {
		return err
	}
	_ = unix.PtraceDetach(pid)
	return nil
}

// threadBomb makes OS threads until the kernel refuses one: each
// goroutine blocks in a system call, so the Go runtime starts a thread for
// the next, until it dies with "failed to create new OS thread ...
// errno=11" (threads and processes count alike against the pids limit,
// and threads are quicker to make than processes of a Go program).
func threadBomb(string) (string, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], 0); err != nil {
		return "", err
	}
	for i := 0; i < 1<<20; i++ {
		go func() {
			var b [1]byte
			unix.Read(p[0], b[:])
		}()
		if i%64 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	time.Sleep(time.Minute)
	return "", fmt.Errorf("no thread limit reached")
}

// fill forks processes until the kernel refuses one (the box's pids
// limit), says how many on stderr, then holds them until its process group
// is killed. Unlike threadBomb it survives the refusal: the box stays at its
// limit. The children are bare forks (no exec, which would cost more than
// the fork): each only waits for a signal in raw system calls, touching
// none of the Go runtime's state.
func fill(string) (string, error) {
	n := 0
	for {
		pid, _, errno := syscall.RawSyscall(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0)
		if errno == syscall.EAGAIN {
			break
		}
		if errno != 0 {
			return "", errno
		}
		if pid == 0 {
			for {
				syscall.RawSyscall6(unix.SYS_PPOLL, 0, 0, 0, 0, 0, 0)
			}
		}
		n++
	}
	fmt.Fprintf(os.Stderr, "filled: %d processes, then EAGAIN\n", n)
	for {
		unix.Pause()
	}
}

// alloc touches the given number of MiB, one at a time, printing each.
func alloc(mib string) (string, error) {
	n, err := strconv.Atoi(mib)
	if err != nil {
		return "", err
	}
	var keep [][]byte
	for i := 0; i < n; i++ {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = 1
		}
		keep = append(keep, b)
		fmt.Fprintf(os.Stderr, "%d\n", i+1)
	}
	return strconv.Itoa(len(keep)), nil
}

func main() {
	enc := json.NewEncoder(os.Stdout)
	for _, a := range os.Args[1:] {
		name, arg, _ := strings.Cut(a, "=")
		fn, ok := attacks[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "probe: unknown attack %q\n", name)
			os.Exit(2)
		}
		r := Result{Attack: a}
		data, err := fn(arg)
		r.Data = data
		if err != nil {
			r.Errno = errName(err)
		}
		enc.Encode(&r)
	}
}
