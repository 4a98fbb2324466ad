package launch

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// InNamespace runs fn on a new OS thread that joins the namespace kind
// ("mnt", "net") of pid; the thread exits afterwards (it is never
// unlocked, so the runtime discards it), so no other goroutine ever runs
// in that namespace. It is never the main thread.
func InNamespace(pid int, kind string, fn func() error) error {
	flag, ok := map[string]int{"mnt": unix.CLONE_NEWNS, "net": unix.CLONE_NEWNET}[kind]
	if !ok {
		return fmt.Errorf("join %s namespace: not a namespace this package joins", kind)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// The main thread never exits (the runtime parks it instead):
			// it would stay in the namespace, and /proc/self with it.
			// Hold it while another thread does the work.
			defer runtime.UnlockOSThread()
			errc <- InNamespace(pid, kind, fn)
			return
		}
		errc <- func() error {
			if flag == unix.CLONE_NEWNS {
				// A thread sharing its fs struct cannot change mount namespace.
				if err := unix.Unshare(unix.CLONE_FS); err != nil {
					return fmt.Errorf("unshare fs: %w", err)
				}
			}
			ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, kind), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(ns)
			if err := unix.Setns(ns, flag); err != nil {
				return fmt.Errorf("join %s namespace: %w", kind, err)
			}
			return fn()
		}()
	}()
	return <-errc
}
