// Package seccomp builds and installs the syscall filter of sandbox boxes:
// a deny list equivalent in effect to Docker's default profile, assembled
// as a classic BPF program with golang.org/x/sys/unix (the agent is
// static: no libseccomp).
//
// Denied calls fail with EPERM so tools fail politely; clone3 fails with
// ENOSYS (its flags sit in memory a filter cannot read, and libc then
// falls back to clone, whose flags it can); a call of a foreign
// architecture (i386, x32 on amd64) kills the process.
//
// Install changes only the calling thread (no TSYNC). It must only be
// called on a thread locked for good to one goroutine, as the agent's
// spawn thread is: everything that thread forks inherits the filter, and
// no other thread of the agent is affected.
package seccomp

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// NamespaceFlags are the clone/unshare flags that make a new namespace;
// a box may not use them (the box's namespaces are made by the host).
const NamespaceFlags = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
	unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET

// Rule denies one syscall: always (Mask == 0), or when its first argument
// has any bit of Mask set.
type Rule struct {
	Name  string
	Nr    uint32
	Mask  uint32 // bits of argument 0 that make the call denied
	Errno unix.Errno
}

// Rules is the deny list for this architecture (see rules_<arch>.go).
func Rules() []Rule {
	rules := make([]Rule, 0, len(denied)+3)
	for _, d := range denied {
		rules = append(rules, Rule{Name: d.name, Nr: d.nr, Errno: unix.EPERM})
	}
	rules = append(rules,
		Rule{Name: "clone", Nr: unix.SYS_CLONE, Mask: cloneNSMask, Errno: unix.EPERM},
		// CLONE_NEWTIME shares its bit with clone's exit signal, so only
		// unshare checks it.
		Rule{Name: "unshare", Nr: unix.SYS_UNSHARE, Mask: NamespaceFlags | unix.CLONE_NEWTIME, Errno: unix.EPERM},
		Rule{Name: "clone3", Nr: unix.SYS_CLONE3, Errno: unix.ENOSYS},
	)
	return rules
}

// Offsets in struct seccomp_data.
const (
	offNr   = 0
	offArch = 4
	offArg0 = 16 // low 32 bits on little-endian machines
)

// Program assembles the filter for rules: check the architecture, then one
// comparison per rule, then allow.
func Program(rules []Rule) []unix.SockFilter {
	stmt := func(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }
	jump := func(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
		return unix.SockFilter{Code: code, K: k, Jt: jt, Jf: jf}
	}
	ret := func(v uint32) unix.SockFilter { return stmt(unix.BPF_RET|unix.BPF_K, v) }
	kill := ret(unix.SECCOMP_RET_KILL_PROCESS)

	p := []unix.SockFilter{
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offArch),
		jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, auditArch, 1, 0),
		kill,
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offNr),
	}
	if x32Bit != 0 { // amd64: x32 calls are the same numbers with this bit set
		p = append(p, jump(unix.BPF_JMP|unix.BPF_JGE|unix.BPF_K, x32Bit, 0, 1), kill)
	}
	for _, r := range rules {
		deny := ret(unix.SECCOMP_RET_ERRNO | uint32(r.Errno)&unix.SECCOMP_RET_DATA)
		if r.Mask == 0 {
			p = append(p, jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, r.Nr, 0, 1), deny)
			continue
		}
		// if nr == r.Nr { if arg0 & mask { deny } ; reload nr } (the
		// accumulator holds the argument after the test).
		p = append(p,
			jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, r.Nr, 0, 4),
			stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offArg0),
			jump(unix.BPF_JMP|unix.BPF_JSET|unix.BPF_K, r.Mask, 0, 1),
			deny,
			stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offNr),
		)
	}
	return append(p, ret(unix.SECCOMP_RET_ALLOW))
}

// Install loads the filter into the calling thread. The thread must have
// no_new_privs set (or CAP_SYS_ADMIN).
func Install() error {
	prog := Program(Rules())
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog)))
	if errno != 0 {
		return fmt.Errorf("install seccomp filter: %w", errno)
	}
	return nil
}

type deniedCall struct {
	name string
	nr   uint32
}
