package seccomp

import "golang.org/x/sys/unix"

const (
	auditArch   = unix.AUDIT_ARCH_AARCH64
	x32Bit      = 0 // no second ABI on the same architecture number
	cloneNSMask = NamespaceFlags
)

var archDenied = []deniedCall{
	{"nfsservctl", unix.SYS_NFSSERVCTL},
}
