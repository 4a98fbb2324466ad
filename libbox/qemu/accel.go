//go:build linux

package qemu

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/bootparam"
	"github.com/libbox/libbox/libbox/internal/vmboot"
)

// Accelerators.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
)

// A rung is one way of running a VM. The ladder lists them best first:
// the micro-VM machine under KVM, the PC machine under KVM (for hosts
// whose KVM cannot run microvm: old QEMU, nested virtualisation that
// aborts on an MSR), and the PC machine under TCG emulation, which works
// everywhere and is the floor.
type rung struct {
	Name    string // "microvm-kvm", "pc-kvm", "pc-tcg"
	Machine string // QEMU machine type
	Accel   string
}

var ladder = []rung{
	{"microvm-kvm", "microvm", AccelKVM},
	{"pc-kvm", "pc", AccelKVM},
	{"pc-tcg", "pc", AccelTCG},
}

func (r rung) machine() machine { return machine{typ: r.Machine, accel: r.Accel} }

// probeTimeout bounds a KVM probe boot. A working KVM boots the agent in
// well under a second; the hosts where KVM is broken hang.
const probeTimeout = 15 * time.Second

// accelChoice is the ladder's answer for this host.
type accelChoice struct {
	Key  string `json:"key"`
	Rung string `json:"rung"`
	// Why says why this rung and not a higher one ("" for the top rung).
	Why string `json:"why,omitempty"`
}

// ladderVersion is part of the cache key: bump it when the rungs or what
// a probe checks change.
const ladderVersion = "2"

// accel decides the rung boxes run on: the one forced by Options.Accel
// (LIBBOX_ACCEL, read by the runtime), else the answer cached for this host, QEMU, guest
// kernel and host kernel, else the first rung whose probe boot reaches
// the agent. The floor (pc-tcg) is not probed: nothing is below it, and
// the box's own boot reports its failure.
func (b *Backend) accel(ctx context.Context, qemuBin string, k vmboot.Kernel, agentPath string) (rung, string, error) {
	force := b.opts.Accel
	candidates := ladder
	switch force {
	case "", "auto":
	case AccelKVM:
		candidates = ladder[:2]
	case AccelTCG:
		return ladder[2], "forced (accel=tcg)", nil
	default:
		for _, r := range ladder {
			if r.Name == force {
				return r, "forced (accel=" + force + ")", nil
			}
		}
		return rung{}, "", errdefs.New(errdefs.InvalidArgument, "accel %q: want auto, kvm, tcg, microvm-kvm, pc-kvm or pc-tcg (LIBBOX_ACCEL or Options.Accel)", force)
	}

	var tried []string
	kvmDev := b.kvmDevice
	if kvmDev == "" {
		kvmDev = "/dev/kvm"
	}
	if f, err := os.OpenFile(kvmDev, os.O_RDWR, 0); err != nil {
		why := fmt.Sprintf("%s unusable (%v): load kvm_intel or kvm_amd and add this user to group kvm, or set LIBBOX_ACCEL=tcg", kvmDev, err)
		if force == AccelKVM {
			return rung{}, "", errdefs.New(errdefs.Unavailable, "accel=kvm: %s", why)
		}
		return ladder[2], why, nil
	} else {
		f.Close()
	}

	b.probeMu.Lock()
	defer b.probeMu.Unlock()
	key := hostKey(qemuBin, k.Image, force)
	// The answer is a property of the host: it is kept in the libbox home
	// and in the user's cache dir (so fresh homes, as in tests, reuse it).
	files := []string{filepath.Join(b.cache, "accel.json")}
	if d, err := os.UserCacheDir(); err == nil {
		files = append(files, filepath.Join(d, "libbox", "accel.json"))
	}
	for _, f := range files {
		var c accelChoice
		if raw, err := os.ReadFile(f); err == nil && json.Unmarshal(raw, &c) == nil && c.Key == key {
			for _, r := range candidates {
				if r.Name == c.Rung {
					return r, c.Why, nil
				}
			}
		}
	}
	if agentPath == "" {
		return rung{}, "", errdefs.New(errdefs.InvalidArgument, "qemu: no agent to probe the accelerator with")
	}
	initrd, err := vmboot.AgentInitramfs(b.cache, agentPath, k)
	if err != nil {
		return rung{}, "", err
	}
	timeout := b.probeTimeout
	if timeout <= 0 {
		timeout = probeTimeout
	}
	chosen := rung{}
	for i, r := range candidates {
		if r.Accel == AccelTCG && i == len(candidates)-1 {
			chosen = r
			break
		}
		d, err := b.probeRung(ctx, qemuBin, k, initrd, r, timeout)
		if err == nil {
			b.logf("vm: %s probe reached the agent in %s", r.Name, d.Round(time.Millisecond))
			chosen = r
			break
		}
		if ctx.Err() != nil {
			return rung{}, "", errdefs.Wrap(errdefs.CodeOf(ctx.Err()), ctx.Err(), "probing %s", r.Name)
		}
		tried = append(tried, r.Name+": "+oneLine(err.Error()))
	}
	if chosen.Name == "" {
		return rung{}, "", errdefs.New(errdefs.Unavailable, "accel=kvm: no KVM machine reached the agent (%s); set LIBBOX_ACCEL=tcg to emulate", strings.Join(tried, "; "))
	}
	c := accelChoice{Key: key, Rung: chosen.Name, Why: strings.Join(tried, "; ")}
	raw, _ := json.Marshal(c)
	for _, f := range files {
		_ = vmboot.WriteFileAtomic(f, raw)
	}
	return chosen, c.Why, nil
}

// hostKey names what the ladder's answer depends on: this host, its
// kernel, the QEMU binary and the guest kernel (path, size and time).
func hostKey(qemuBin, kernel, force string) string {
	h := sha256.New()
	fmt.Fprintf(h, "ladder %s %s\n", ladderVersion, force)
	for _, p := range []string{qemuBin, kernel} {
		fmt.Fprintf(h, "%s\n", p)
		if st, err := os.Stat(p); err == nil {
			fmt.Fprintf(h, "%d %d\n", st.Size(), st.ModTime().UnixNano())
		}
	}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		fmt.Fprintf(h, "%s\n%s\n%s\n", unix.ByteSliceToString(uts.Nodename[:]),
			unix.ByteSliceToString(uts.Release[:]), unix.ByteSliceToString(uts.Version[:]))
	}
	return hex.EncodeToString(h.Sum(nil))[:24]
}

// probeRung boots the agent's initramfs (no disk, no network) on one rung
// and returns once the agent answered the stream handshake on its port,
// then kills the probe VM. A QEMU that exits, aborts or hangs fails the
// rung with what it printed.
func (b *Backend) probeRung(ctx context.Context, qemuBin string, k vmboot.Kernel, initrd string, r rung, timeout time.Duration) (time.Duration, error) {
	dir, err := os.MkdirTemp("", "libbox-probe-")
	if err != nil {
		return 0, errdefs.Wrap(errdefs.Internal, err, "probe dir")
	}
	defer os.RemoveAll(dir)
	m := r.machine()
	sock, logPath := filepath.Join(dir, "agent.sock"), filepath.Join(dir, "qemu.log")
	params := []string{bootparam.ParamPort + "=" + PortName, bootparam.ParamModules + "=" + m.transportModule() + ",virtio_console"}
	args := m.args(1, 256)
	args = append(args, "-nic", "none",
		"-kernel", k.Image, "-initrd", initrd, "-append", m.cmdline(nil, b.opts.VMDebug)+" "+strings.Join(params, " "),
		"-chardev", "file,id=con,path="+qemuPath(filepath.Join(dir, "console.log")), "-serial", "chardev:con",
		"-device", m.device("virtio-serial")+",id=vser,max_ports=2",
		"-chardev", "socket,id=agent,path="+qemuPath(sock)+",server=on,wait=off",
		"-device", "virtserialport,bus=vser.0,chardev=agent,name="+PortName,
	)
	start := time.Now()
	p, err := spawn(qemuBin, args, logPath, false)
	if err != nil {
		return 0, err
	}
	defer func() {
		p.kill()
		<-p.done
	}()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	failed := func(what string) error {
		out, _ := os.ReadFile(logPath)
		if s := lastLines(string(out), 2); s != "" {
			what += ": " + s
		}
		if c := oneLine(vmboot.ConsoleTail(dir, 2)); c != "" {
			what += " (console: " + c + ")"
		}
		return errdefs.New(errdefs.Unavailable, "%s", what)
	}
	for {
		err := reachAgent(ctx, sock, p.done)
		if err == nil {
			return time.Since(start), nil
		}
		select {
		case <-p.done:
			return 0, failed("QEMU " + p.exitString())
		default:
		}
		if ctx.Err() != nil {
			return 0, failed(fmt.Sprintf("did not reach the agent within %s", timeout))
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-t.C:
		case <-p.done:
		case <-ctx.Done():
		}
		t.Stop()
	}
}

// reachAgent dials the probe's port and runs the stream handshake, until
// ctx ends or QEMU exits.
func reachAgent(ctx context.Context, sock string, exited <-chan struct{}) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	go func() {
		select {
		case <-exited:
			c.SetDeadline(time.Unix(1, 0))
		case <-ctx.Done():
		}
	}()
	_, err = handshake(c)
	return err
}

// lastLines returns the last n non-empty lines of s on one line.
func lastLines(s string, n int) string {
	var keep []string
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0 && len(keep) < n; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			keep = append([]string{l}, keep...)
		}
	}
	return oneLine(strings.Join(keep, " | "))
}

// bareBoot boots the probe initramfs (init prints a marker and powers off)
// on the machine and returns how long QEMU ran.
func (b *Backend) bareBoot(ctx context.Context, qemuBin string, k vmboot.Kernel, m machine, timeout time.Duration) (time.Duration, error) {
	initrd, err := vmboot.ProbeInitramfs(b.cache)
	if err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "libbox-probe-")
	if err != nil {
		return 0, errdefs.Wrap(errdefs.Internal, err, "probe dir")
	}
	defer os.RemoveAll(dir)
	console := filepath.Join(dir, "console.log")
	args := m.args(1, 128)
	args = append(args, "-nic", "none",
		"-kernel", k.Image, "-initrd", initrd, "-append", m.cmdline(nil, b.opts.VMDebug),
		"-chardev", "file,id=con,path="+console, "-serial", "chardev:con")
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	out, err := runQEMU(ctx, dir, qemuBin, args)
	d := time.Since(start)
	if ctx.Err() != nil {
		return d, errdefs.New(errdefs.DeadlineExceeded, "%s boot did not power off within %s; console: %s", m.accel, timeout, oneLine(vmboot.ConsoleTail(dir, 5)))
	}
	if err != nil {
		return d, errdefs.New(errdefs.Unavailable, "qemu (%s): %v: %s", m.accel, err, oneLine(string(out)))
	}
	if b, _ := os.ReadFile(console); !strings.Contains(string(b), vmboot.ProbeMarker) {
		return d, errdefs.New(errdefs.Unavailable, "%s boot ended without running init; console: %s", m.accel, oneLine(vmboot.ConsoleTail(dir, 5)))
	}
	return d, nil
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[len(s)-300:]
	}
	return s
}
