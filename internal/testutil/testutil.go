// Package testutil is what the tests of every libbox package share:
// requirements that skip on a developer's machine with a message saying how
// to fix it and fail in CI (where every test must run), leak checks,
// contexts bound to a test, and tar archives.
//
// Only tests import it. It never imports the host runtime (libbox/...) or
// the agent (guest/...), so the tests of both sides can use it.
package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// InCI reports whether the tests run in CI: the CI variable is set (.ci/run
// sets it), and a missing requirement is then a failure, not a skip.
func InCI() bool { return os.Getenv("CI") != "" }

// SkipOrFail skips t with the message, or fails it in CI. The message says
// what is missing and how to fix the machine.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("%s (CI runs every test: ./build.sh deps and .ci/run must provide this)", msg)
	}
	t.Skip(msg)
}

// Require skips (or fails in CI) when err is not nil; fix says what to do.
func Require(t testing.TB, err error, fix string) {
	t.Helper()
	if err != nil {
		SkipOrFail(t, "%v (fix: %s)", err, fix)
	}
}

// RequireLinux skips on other systems, also in CI (CI is Linux).
func RequireLinux(t testing.TB) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skipf("this test needs Linux, not %s", runtime.GOOS)
	}
}

// RequireRoot skips (or fails in CI) unless the test runs as root; why
// says what needs it.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "%s needs root (fix: run the tests as root, as CI does)", why)
	}
}

// RequireSandbox skips (or fails in CI) where namespace sandboxes cannot
// start: not Linux, or neither root nor unprivileged user namespaces.
func RequireSandbox(t testing.TB) {
	t.Helper()
	RequireLinux(t)
	if os.Geteuid() == 0 {
		return
	}
	if b, err := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); err == nil && strings.TrimSpace(string(b)) == "0" {
		SkipOrFail(t, "namespace sandboxes need root or user namespaces (fix: run as root, or sysctl kernel.unprivileged_userns_clone=1)")
	}
}

// RequireTool returns the path of a host program, skipping (or failing in
// CI) when it is missing; pkg is the Debian package that has it.
func RequireTool(t testing.TB, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if p := d + "/" + name; isExec(p) {
			return p
		}
	}
	SkipOrFail(t, "%s not found (fix: apt-get install %s, or ./build.sh deps)", name, pkg)
	return ""
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// RequireQEMU skips (or fails in CI) unless QEMU VMs can boot here: Linux on
// amd64 with qemu-system-x86_64, mkfs.ext4 and a static busybox. The guest
// kernel is checked by the caller (its lookup lives in the host runtime).
func RequireQEMU(t testing.TB) {
	t.Helper()
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skipf("the QEMU tests run on linux/amd64, not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	RequireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	RequireTool(t, "mkfs.ext4", "e2fsprogs")
	if !isExec("/bin/busybox") && !isExec("/usr/bin/busybox") {
		SkipOrFail(t, "no busybox (fix: apt-get install busybox-static)")
	}
}

// Must fails the test when err is not nil.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Ctx is a context that ends after d or when the test ends.
func Ctx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
