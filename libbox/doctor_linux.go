package libbox

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// hostChecks are the Linux host's sandbox and network prerequisites.
func hostChecks() []Check { return []Check{userNSCheck(), cgroupCheck(), tunCheck()} }

func tunCheck() Check {
	c := Check{Name: "tun"}
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		c.Status, c.Detail = CheckWarn, fmt.Sprintf("/dev/net/tun: %v: sandbox boxes cannot have a network", err)
		c.Fix = "load the tun module (`modprobe tun`)"
		return c
	}
	f.Close()
	c.Status, c.Detail = CheckOK, "/dev/net/tun is usable"
	return c
}

// userNSCheck creates a user namespace for real: the sandbox needs one (and
// a root host maps box root to an unprivileged range with one).
func userNSCheck() Check {
	c := Check{Name: "userns", Needed: []string{IsolationSandbox}}
	bin := "/bin/true"
	if _, err := os.Stat(bin); err != nil {
		bin = "/usr/bin/true"
	}
	cmd := exec.Command(bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	if err := cmd.Run(); err != nil {
		c.Status, c.Detail = CheckFail, fmt.Sprintf("cannot create a user namespace: %v", err)
		c.Fix = "enable unprivileged user namespaces: `sysctl -w kernel.unprivileged_userns_clone=1` and `sysctl -w user.max_user_namespaces=15000` (and, on Ubuntu 24.04+, `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`)"
		return c
	}
	c.Status, c.Detail = CheckOK, "user namespaces work"
	return c
}

// cgroupCheck reports the cgroup controllers limits can use.
func cgroupCheck() Check {
	c := Check{Name: "cgroup"}
	if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		ctrls := strings.Fields(string(b))
		c.Detail = "cgroup v2, controllers: " + strings.Join(ctrls, " ")
		c.Status = CheckOK
		for _, want := range []string{"memory", "pids", "cpu"} {
			if !slices.Contains(ctrls, want) {
				c.Status = CheckWarn
				c.Fix = "enable the memory, pids and cpu controllers (cgroup_enable= on the kernel command line, or delegate them to this user)"
			}
		}
		return c
	}
	var v1 []string
	for _, ctrl := range []string{"memory", "pids", "cpu"} {
		if st, err := os.Stat(filepath.Join("/sys/fs/cgroup", ctrl)); err == nil && st.IsDir() {
			v1 = append(v1, ctrl)
		}
	}
	if len(v1) == 3 {
		c.Status, c.Detail = CheckOK, "cgroup v1 controllers: "+strings.Join(v1, " ")
		return c
	}
	c.Status = CheckWarn
	c.Detail = "no cgroup memory/pids/cpu controllers found: box limits are not enforced by cgroups"
	c.Fix = "mount cgroup v2 at /sys/fs/cgroup (systemd does by default)"
	return c
}
