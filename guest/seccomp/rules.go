package seccomp

import "golang.org/x/sys/unix"

// denied lists the calls a box may never make, grouped as Docker's default
// profile groups what it leaves out.
var denied = append([]deniedCall{
	// kernel keyring
	{"add_key", unix.SYS_ADD_KEY}, {"keyctl", unix.SYS_KEYCTL}, {"request_key", unix.SYS_REQUEST_KEY},
	// tracing, eBPF, kernel memory
	{"bpf", unix.SYS_BPF}, {"perf_event_open", unix.SYS_PERF_EVENT_OPEN}, {"lookup_dcookie", unix.SYS_LOOKUP_DCOOKIE},
	{"kcmp", unix.SYS_KCMP}, {"userfaultfd", unix.SYS_USERFAULTFD}, {"syslog", unix.SYS_SYSLOG},
	{"io_uring_setup", unix.SYS_IO_URING_SETUP}, {"io_uring_enter", unix.SYS_IO_URING_ENTER},
	{"io_uring_register", unix.SYS_IO_URING_REGISTER},
	// modules, kexec, reboot, swap, accounting, quotas
	{"init_module", unix.SYS_INIT_MODULE}, {"finit_module", unix.SYS_FINIT_MODULE}, {"delete_module", unix.SYS_DELETE_MODULE},
	{"kexec_load", unix.SYS_KEXEC_LOAD}, {"kexec_file_load", unix.SYS_KEXEC_FILE_LOAD}, {"reboot", unix.SYS_REBOOT},
	{"swapon", unix.SYS_SWAPON}, {"swapoff", unix.SYS_SWAPOFF}, {"acct", unix.SYS_ACCT},
	{"quotactl", unix.SYS_QUOTACTL}, {"quotactl_fd", unix.SYS_QUOTACTL_FD}, {"vhangup", unix.SYS_VHANGUP},
	// mounts (after boot) and namespaces
	{"mount", unix.SYS_MOUNT}, {"umount2", unix.SYS_UMOUNT2}, {"pivot_root", unix.SYS_PIVOT_ROOT},
	{"mount_setattr", unix.SYS_MOUNT_SETATTR}, {"move_mount", unix.SYS_MOVE_MOUNT}, {"open_tree", unix.SYS_OPEN_TREE},
	{"fsopen", unix.SYS_FSOPEN}, {"fsconfig", unix.SYS_FSCONFIG}, {"fsmount", unix.SYS_FSMOUNT}, {"fspick", unix.SYS_FSPICK},
	{"setns", unix.SYS_SETNS}, {"fanotify_init", unix.SYS_FANOTIFY_INIT},
	// file handles (the classic escape from a bind mount)
	{"open_by_handle_at", unix.SYS_OPEN_BY_HANDLE_AT},
	// clocks
	{"clock_settime", unix.SYS_CLOCK_SETTIME}, {"clock_adjtime", unix.SYS_CLOCK_ADJTIME}, {"settimeofday", unix.SYS_SETTIMEOFDAY},
	// NUMA policy of host memory
	{"mbind", unix.SYS_MBIND}, {"set_mempolicy", unix.SYS_SET_MEMPOLICY}, {"get_mempolicy", unix.SYS_GET_MEMPOLICY},
	{"migrate_pages", unix.SYS_MIGRATE_PAGES}, {"move_pages", unix.SYS_MOVE_PAGES},
}, archDenied...)
