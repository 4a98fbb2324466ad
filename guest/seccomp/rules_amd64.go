package seccomp

import "golang.org/x/sys/unix"

const (
	auditArch   = unix.AUDIT_ARCH_X86_64
	x32Bit      = 0x40000000 // __X32_SYSCALL_BIT
	cloneNSMask = NamespaceFlags
)

// Calls only older or foreign-ABI kernels have on other architectures.
var archDenied = []deniedCall{
	{"create_module", unix.SYS_CREATE_MODULE}, {"get_kernel_syms", unix.SYS_GET_KERNEL_SYMS},
	{"ioperm", unix.SYS_IOPERM}, {"iopl", unix.SYS_IOPL}, {"nfsservctl", unix.SYS_NFSSERVCTL},
	{"query_module", unix.SYS_QUERY_MODULE}, {"_sysctl", unix.SYS__SYSCTL}, {"sysfs", unix.SYS_SYSFS},
	{"uselib", unix.SYS_USELIB}, {"ustat", unix.SYS_USTAT},
}
