//go:build linux

// Package qemu is libbox's Linux micro-VM backend: each box is a QEMU
// virtual machine with its own kernel, an initramfs whose /init is the box
// agent, a qcow2 overlay over a cached ext4 image of the box image, and the
// agent's gRPC stream on a virtio-serial port bound to a unix socket.
//
// It decides the accelerator (KVM when a probe boot works, else TCG), and
// starts, watches and stops QEMU processes; the pieces that are not QEMU
// (kernel, initramfs, base disk, command line) come from
// libbox/internal/vmboot. It never speaks the agent protocol, never touches
// the box store or the host's boot setup, and never leaves a QEMU running
// past the host process unless the box is detached. It builds on Linux only.
package qemu

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/internal/agentbin"
	"github.com/libbox/libbox/libbox/internal/launch"
	"github.com/libbox/libbox/libbox/internal/vmboot"
)

// PortName is the name of the agent's virtio-serial port.
const PortName = "org.libbox.agent"

// Options configure the backend. The runtime fills them (libbox.Options);
// the backend never reads the environment.
type Options struct {
	Home string               // libbox home; caches live under Home/vm
	Logf func(string, ...any) // warnings (TCG in use, ...); nil: silent
	// Accel forces a rung of the accelerator ladder: "kvm" (the best KVM
	// machine that works), "tcg", or a rung ("microvm-kvm", "pc-kvm",
	// "pc-tcg"). "" or "auto": probe (see accel).
	Accel string
	// BootTimeout bounds the first handshake with a new VM's agent and a
	// bare boot; 0: DefaultBootTimeout.
	BootTimeout time.Duration
	// Kernel (with its modules directory KernelModules, may be "") is the
	// guest kernel; "": the libbox kernel cache, else /boot.
	Kernel, KernelModules string
	// VMDebug logs the kernel and the agent's boot steps on the console.
	VMDebug bool
}

// DefaultBootTimeout is the boot timeout when Options has none: generous
// enough for TCG on a loaded machine.
const DefaultBootTimeout = 120 * time.Second

func (o Options) bootTimeout() time.Duration {
	if o.BootTimeout > 0 {
		return o.BootTimeout
	}
	return DefaultBootTimeout
}

// Backend starts boxes as QEMU VMs. It is safe for concurrent use.
type Backend struct {
	opts  Options
	cache string

	// probeMu serialises accelerator probes.
	probeMu sync.Mutex
	warn    sync.Once

	// For tests of the ladder: the KVM device ("" is /dev/kvm) and the
	// probe deadline (0 is probeTimeout). Set before first use.
	kvmDevice    string
	probeTimeout time.Duration
}

var _ backend.Backend = (*Backend)(nil)

// New returns a backend. It probes nothing: missing pieces (QEMU, kernel,
// KVM) are found, and reported with what to install, by Start.
func New(opts Options) (*Backend, error) {
	if opts.Home == "" {
		return nil, errdefs.New(errdefs.InvalidArgument, "qemu backend: Options.Home is empty: pass the libbox home directory")
	}
	return &Backend{opts: opts, cache: vmboot.CacheDir(opts.Home)}, nil
}

// Name is the isolation name.
func (b *Backend) Name() string { return "vm" }

func (b *Backend) logf(format string, args ...any) {
	if b.opts.Logf != nil {
		b.opts.Logf(format, args...)
	}
}

// machine is how QEMU is configured: a machine type (microvm or pc) under
// an accelerator (a rung of the ladder).
type machine struct {
	typ   string
	accel string
}

func (m machine) name() string { return m.typ }

func (m machine) microvm() bool { return m.typ == "microvm" }

// transportModule is the kernel module of the machine's virtio transport.
func (m machine) transportModule() string {
	if m.microvm() {
		return "virtio_mmio"
	}
	return "virtio_pci"
}

// device names a virtio device for the machine's transport.
func (m machine) device(kind string) string {
	if m.microvm() {
		return kind + "-device" // virtio-mmio
	}
	return kind + "-pci"
}

// args are the machine, CPU and memory arguments shared by boxes, probes
// and bare boots. KVM runs the host's CPU model; TCG emulates the most it can.
func (m machine) args(cpus, memMiB int) []string {
	a := []string{"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"}
	mach := m.typ + ",accel=" + m.accel
	if m.microvm() {
		mach += ",acpi=on"
	}
	cpu := "max"
	if m.accel == AccelKVM {
		cpu = "host"
	}
	a = append(a, "-machine", mach, "-cpu", cpu)
	return append(a, "-smp", strconv.Itoa(cpus), "-m", strconv.Itoa(memMiB))
}

// cmdline is the kernel command line of a box (nil: a bare boot) on this
// machine: console on the first serial port, plus, for -M pc, the quirks
// that skip the i8042 probes and route PCI interrupts without ACPI
// (evaluating the ACPI interrupt links under TCG costs over a second of
// boot when virtio_pci loads). init_on_free zeroes freed pages, so the
// initramfs the kernel unpacked and freed costs nothing in a VM template's
// RAM file (its zero pages become holes) nor in a memory snapshot (zero
// pages are not stored): 108 MiB → 66 MiB for busybox.
// debug logs the kernel and the agent's boot steps.
func (m machine) cmdline(box *vmboot.Box, debug bool) string {
	c := vmboot.Cmdline{Console: "ttyS0", Debug: debug, Machine: []string{"no_timer_check", "init_on_free=1"}, Box: box}
	if !m.microvm() {
		c.Machine = append(c.Machine, "i8042.noaux", "i8042.nomux", "i8042.nopnp", "i8042.dumbkbd", "acpi=noirq")
	}
	if box != nil {
		box.Transport = m.transportModule()
	}
	return c.String()
}

// boxFiles are the files QEMU uses in a box directory.
type boxFiles struct {
	agentSock, qmpSock, console, stderr, pidFile string
}

func filesIn(dir string) boxFiles {
	return boxFiles{
		agentSock: filepath.Join(dir, "agent.sock"),
		qmpSock:   filepath.Join(dir, "qmp.sock"),
		console:   filepath.Join(dir, "console.log"),
		stderr:    filepath.Join(dir, "qemu.log"),
		pidFile:   filepath.Join(dir, "qemu.pid"),
	}
}

// maxSockPath is the longest unix socket path the kernel accepts.
const maxSockPath = 107

// Start boots a box and returns once QEMU runs the machine and the agent
// socket can be dialled. ctx bounds the start only.
func (b *Backend) Start(ctx context.Context, spec backend.Spec) (backend.Instance, error) {
	return b.start(ctx, spec, "")
}

// start is Start; a non-empty templateRAM is the file the guest's RAM is
// to live in (a template being built: see template.go).
func (b *Backend) start(ctx context.Context, spec backend.Spec, templateRAM string) (backend.Instance, error) {
	if err := validate(spec); err != nil {
		return nil, err
	}
	st := startTimer{t: time.Now()}
	pr, err := b.prepare(ctx, spec)
	if err != nil {
		return nil, err
	}
	st.lap("1_prepare (QEMU, kernel, initramfs, base disk)")
	qemuBin, k, r, why, initrd := pr.qemuBin, pr.kernel, pr.rung, pr.why, pr.initrd
	if r != ladder[0] {
		b.warn.Do(func() { b.logf("libbox: VMs run on %s%s (%s)", r.Name, slowNote(r), why) })
	}
	disk := filepath.Join(spec.Dir, diskName)
	_, err = os.Stat(disk)
	fresh := err != nil

	cpus, mem := vmboot.Limits(spec.CPUs, spec.MemoryMiB)
	f := filesIn(spec.Dir)
	for _, p := range []string{f.agentSock, f.qmpSock} {
		_ = os.Remove(p)
	}
	m := r.machine()
	args := ramArgs(m.args(cpus, mem), mem)
	args = append(args,
		"-name", qemuPath("libbox-"+spec.ID),
		"-kernel", k.Image, "-initrd", initrd,
		"-chardev", "file,id=con,path="+f.console, "-serial", "chardev:con",
		"-drive", "file="+qemuPath(disk)+",if=none,id=root,format=qcow2,discard=unmap,cache=writeback",
		"-device", m.device("virtio-blk")+",drive=root",
		"-device", m.device("virtio-serial")+",id=vser,max_ports=2",
		"-chardev", "socket,id=agent,path="+qemuPath(f.agentSock)+",server=on,wait=off",
		"-device", "virtserialport,bus=vser.0,chardev=agent,name="+PortName,
		"-qmp", "unix:"+qemuPath(f.qmpSock)+",server=on,wait=off",
	)
	helpers, vargs, err := b.startVolumes(ctx, spec, m, mem)
	if err != nil {
		return nil, err
	}
	args = append(args, vargs...)
	box := &vmboot.Box{Port: PortName, Hostname: spec.Hostname, Volumes: spec.Volumes}
	nl, nargs, err := newNetLink(spec, m, box)
	if err != nil {
		stopHelpers(helpers)
		return nil, err
	}
	defer nl.close()
	args = append(args, nargs...)
	args = append(args, "-append", m.cmdline(box, b.opts.VMDebug))
	// A new disk starts from the base image, or from a template's disk
	// with the template's memory (see template.go); a disk just reset
	// onto a memory snapshot resumes its machine (memsnap.go).
	args, resume := b.resumeArgs(ctx, spec, pr, args)
	tmpl := ""
	if resume == "" {
		args, tmpl, err = b.startDisk(ctx, spec, pr, args, fresh)
	}
	if err != nil {
		stopHelpers(helpers)
		return nil, err
	}

	st.lap("2_disk (overlay, or a template's copy)")
	j, err := newJail(spec, r.Accel, cpus, mem)
	if err != nil {
		stopHelpers(helpers)
		return nil, err
	}
	for _, h := range helpers {
		j.join(h.PID)
	}
	// The arguments a template records, and a box restored from it
	// compares, have the guest's RAM anonymous; the template's own QEMU and
	// those of the boxes restored from it have it in the template's file.
	largs := args
	if templateRAM != "" {
		largs = ramFile(args, templateRAM, true)
	} else if tmpl != "" {
		largs = ramFile(args, filepath.Join(b.templateRoot(), tmpl, templateRAMFile), false)
	}
	bin, jargs, err := j.command(qemuBin, largs)
	var p *proc
	if err == nil {
		p, err = spawn(bin, jargs, f.stderr, spec.Detach, nl.files()...)
	}
	if err != nil {
		stopHelpers(helpers)
		j.release()
		return nil, err
	}
	j.join(p.pid)
	st.lap("3_launch (jail, fork, exec)")
	inst := newInstance(spec, p, f, r.Accel, m.name(), cpus, mem, k)
	inst.args, inst.template, inst.resumed = args, tmpl, resume
	inst.rung, inst.rungWhy = r.Name, why
	inst.bootTimeout = b.opts.bootTimeout()
	inst.helpers = helpers
	inst.jail = j
	err = inst.waitStarted(ctx)
	if err == nil {
		err = j.started(ctx, p)
	}
	st.lap("4_qemu ready (sockets, QMP answers)")
	if err == nil && tmpl != "" {
		err = inst.waitRestored(ctx, filepath.Join(b.templateRoot(), tmpl, templateState))
	}
	if err == nil && resume != "" {
		err = inst.waitRestored(ctx, filepath.Join(resume, memoryStateFile))
	}
	if tmpl != "" || resume != "" {
		st.lap("5_state loaded (migrate-incoming, cont)")
	}
	inst.stages = st.laps
	if err != nil {
		inst.Kill()
		t := time.NewTimer(killTimeout)
		select {
		case <-p.done:
		case <-t.C:
		}
		t.Stop()
		inst.release()
		if tmpl != "" && ctx.Err() == nil { // the template does not load: drop it, boot instead
			b.dropTemplate(tmpl, err)
			_ = os.Remove(disk)
			spec.FromTemplate = false
			return b.start(ctx, spec, templateRAM)
		}
		if resume != "" && ctx.Err() == nil { // boot from the snapshot's disk instead
			b.logf("libbox: box %s: resuming memory snapshot %s: %v: booting from its disk instead", spec.ID, resume, err)
			return b.start(ctx, spec, templateRAM)
		}
		return nil, err
	}
	_ = vmboot.WriteFileAtomic(f.pidFile, []byte(strconv.Itoa(inst.pid())+"\n"))
	return inst, nil
}

// prepared is what a start resolves before building QEMU's arguments.
type prepared struct {
	qemuBin string
	kernel  vmboot.Kernel
	rung    rung
	why     string // why not a higher rung
	initrd  string
	base    string // the image's cached ext4 disk
}

// prepare finds QEMU and the kernel, picks the accelerator rung, and
// builds (or finds cached) the initramfs and the image's base disk.
func (b *Backend) prepare(ctx context.Context, spec backend.Spec) (*prepared, error) {
	qemuBin, err := vmboot.LookTool("qemu-system-x86_64", "qemu-system-x86")
	if err != nil {
		return nil, err
	}
	k, err := vmboot.FindKernel(b.opts.Kernel, b.opts.KernelModules)
	if err != nil {
		return nil, err
	}
	r, why, err := b.accel(ctx, qemuBin, k, spec.AgentPath)
	if err != nil {
		return nil, err
	}
	initrd, err := vmboot.AgentInitramfs(b.cache, spec.AgentPath, k)
	if err != nil {
		return nil, err
	}
	base, err := vmboot.BaseDisk(ctx, b.cache, spec.ImageRoot, spec.ImageID)
	if err != nil {
		return nil, err
	}
	return &prepared{qemuBin: qemuBin, kernel: k, rung: r, why: why, initrd: initrd, base: base}, nil
}

func validate(spec backend.Spec) error {
	switch {
	case spec.Dir == "" || !filepath.IsAbs(spec.Dir):
		return errdefs.New(errdefs.InvalidArgument, "qemu: Spec.Dir %q must be an absolute directory", spec.Dir)
	case spec.AgentPath == "":
		return errdefs.New(errdefs.InvalidArgument, "qemu: Spec.AgentPath is empty: pass the static box-agent binary")
	case spec.ImageRoot == "":
		return errdefs.New(errdefs.InvalidArgument, "qemu: Spec.ImageRoot is empty")
	case spec.Network && spec.NetLink == nil:
		return errdefs.New(errdefs.InvalidArgument, "qemu: Spec.Network without Spec.NetLink: pass the box's network link")
	}
	for _, r := range spec.Hostname {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return errdefs.New(errdefs.InvalidArgument, "qemu: hostname %q: use letters, digits, '-' and '.'", spec.Hostname)
		}
	}
	if st, err := os.Stat(spec.Dir); err != nil || !st.IsDir() {
		return errdefs.New(errdefs.NotFound, "qemu: box directory %s does not exist", spec.Dir)
	}
	if st, err := os.Stat(spec.ImageRoot); err != nil || !st.IsDir() {
		return errdefs.New(errdefs.NotFound, "qemu: image root %s is not a directory", spec.ImageRoot)
	}
	if n := len(filepath.Join(spec.Dir, "agent.sock")); n > maxSockPath {
		return errdefs.New(errdefs.InvalidArgument, "qemu: box directory %s is too long for a unix socket path (%d > %d bytes): use a shorter LIBBOX_HOME", spec.Dir, n, maxSockPath)
	}
	return nil
}

// slowNote marks the emulated rung.
func slowNote(r rung) string {
	if r.Accel == AccelTCG {
		return " (TCG emulation: slow)"
	}
	return ""
}

// qemuPath escapes commas for QEMU's option syntax.
func qemuPath(p string) string { return strings.ReplaceAll(p, ",", ",,") }

// BareBoot measures the floor of a VM start on this host: the same QEMU,
// machine, accelerator and kernel as a box of a backend with opts, booting
// a minimal initramfs whose init powers off at once. It returns QEMU's
// whole run time.
func BareBoot(ctx context.Context, opts Options) (time.Duration, error) {
	b, err := New(opts)
	if err != nil {
		return 0, err
	}
	qemuBin, err := vmboot.LookTool("qemu-system-x86_64", "qemu-system-x86")
	if err != nil {
		return 0, err
	}
	k, err := vmboot.FindKernel(b.opts.Kernel, b.opts.KernelModules)
	if err != nil {
		return 0, err
	}
	agent, err := agentbin.Path(filepath.Join(b.opts.Home, "bin"))
	if err != nil {
		return 0, err
	}
	r, _, err := b.accel(ctx, qemuBin, k, agent)
	if err != nil {
		return 0, err
	}
	if _, err := vmboot.ProbeInitramfs(b.cache); err != nil { // build outside the measurement
		return 0, err
	}
	return b.bareBoot(ctx, qemuBin, k, r.machine(), b.opts.bootTimeout())
}

// runQEMU runs QEMU to completion (probes), killing it when ctx ends.
func runQEMU(ctx context.Context, dir, bin string, args []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir // a crashing probe dumps core there, not in the caller's cwd
	cmd.SysProcAttr = deathSig()
	cmd.WaitDelay = 2 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Started from the launcher thread (the program's timer slack, not a
	// coarser one of the calling thread: the probe times the guest),
	// waited for here.
	var err error
	launch.Do(func() { err = cmd.Start() })
	if err == nil {
		err = cmd.Wait()
	}
	return out.Bytes(), err
}

// state is what Attach needs to find a detached box again.
type state struct {
	PID         int      `json:"pid"`
	StartTime   uint64   `json:"start_time"`
	AgentSocket string   `json:"agent_socket"`
	QMPSocket   string   `json:"qmp_socket"`
	Accel       string   `json:"accel"`
	Machine     string   `json:"machine"`
	CPUs        int      `json:"cpus"`
	MemoryMiB   int      `json:"memory_mib"`
	Kernel      string   `json:"kernel"`
	Helpers     []helper `json:"helpers,omitempty"`
	Rung        string   `json:"rung,omitempty"`
	RungWhy     string   `json:"rung_why,omitempty"`
	Jail        *jail    `json:"jail,omitempty"`
}

// Attach reconnects to a detached box from its State. It returns NotFound
// when its QEMU is gone (or the pid now belongs to another process).
func (b *Backend) Attach(ctx context.Context, spec backend.Spec, raw json.RawMessage) (backend.Instance, error) {
	var st state
	if err := json.Unmarshal(raw, &st); err != nil || st.PID <= 0 || st.AgentSocket == "" {
		return nil, errdefs.New(errdefs.InvalidArgument, "qemu: bad box state %q", string(raw))
	}
	p, err := findProc(st.watched())
	if err != nil {
		return nil, err
	}
	f := filesIn(spec.Dir)
	f.agentSock, f.qmpSock = st.AgentSocket, st.QMPSocket
	if _, err := os.Stat(f.agentSock); err != nil {
		return nil, errdefs.Wrap(errdefs.NotFound, err, "qemu: agent socket of box %s", spec.ID)
	}
	inst := newInstance(spec, p, f, st.Accel, st.Machine, st.CPUs, st.MemoryMiB, vmboot.Kernel{Image: st.Kernel})
	inst.bootTimeout = b.opts.bootTimeout()
	inst.greeted.Store(true)
	inst.rung, inst.rungWhy = st.Rung, st.RungWhy
	inst.jail = st.Jail.attached(st)
	for _, h := range st.Helpers {
		if hp, err := findProc(h.PID, h.StartTime); err == nil {
			h.p = hp
			inst.helpers = append(inst.helpers, h)
		}
	}
	return inst, nil
}

// unavailable is the error for a box whose QEMU is gone.
func (i *instance) unavailable() error {
	msg := fmt.Sprintf("vm %s is not running (qemu %s)", i.spec.ID, i.p.exitString())
	if s := strings.TrimSpace(readTail(i.files.stderr, 2048)); s != "" {
		msg += "; qemu: " + oneLine(s)
	}
	all := vmboot.ConsoleTail(i.spec.Dir, 400)
	for _, l := range strings.Split(all, "\n") {
		if strings.Contains(l, "Kernel panic") {
			msg += "; " + strings.TrimSpace(l)
			break
		}
	}
	if tail := vmboot.ConsoleTail(i.spec.Dir, 15); tail != "" {
		msg += "; console:\n" + tail
	}
	return errdefs.New(errdefs.Unavailable, "%s", msg)
}

func readTail(path string, n int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return string(b)
}

// Dial opens a stream to the agent. QEMU's socket serves one client at a
// time: keep one connection (gRPC multiplexes over it).
//
// Every connection starts with a handshake that realigns the byte stream
// (see guest/listen.Serial): the host sends a hello with a fresh nonce and
// discards what it reads until the agent echoes the nonce. The first
// connection of a new VM waits for the boot (bounded by ctx and
// Options.BootTimeout); later ones give up after handshakeTimeout so the caller
// redials.
func (i *instance) Dial(ctx context.Context) (net.Conn, error) {
	select {
	case <-i.p.done:
		return nil, i.unavailable()
	default:
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", i.files.agentSock)
	if err != nil {
		select {
		case <-i.p.done:
			return nil, i.unavailable()
		default:
		}
		if ctx.Err() != nil {
			return nil, errdefs.Wrap(errdefs.CodeOf(ctx.Err()), err, "dialling vm %s", i.spec.ID)
		}
		return nil, errdefs.Wrap(errdefs.Unavailable, err, "dialling vm %s", i.spec.ID)
	}
	limit := handshakeTimeout
	if !i.greeted.Load() {
		limit = i.bootTimeout
	}
	hctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	stop := context.AfterFunc(hctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	go func() { // the VM dying ends the wait at once
		select {
		case <-i.p.done:
			c.SetDeadline(time.Unix(1, 0))
		case <-hctx.Done():
		}
	}()
	conn, err := handshake(c)
	if err == nil && stop() {
		i.greeted.Store(true)
		return conn, nil
	}
	c.Close()
	select {
	case <-i.p.done:
		return nil, i.unavailable()
	default:
	}
	if ctx.Err() != nil {
		return nil, errdefs.Wrap(errdefs.CodeOf(ctx.Err()), ctx.Err(), "vm %s: agent handshake", i.spec.ID)
	}
	return nil, errdefs.New(errdefs.Unavailable, "vm %s: the agent did not answer the stream handshake within %s: redial (console: %s)", i.spec.ID, limit, oneLine(vmboot.ConsoleTail(i.spec.Dir, 3)))
}

// handshakeTimeout bounds the handshake with an agent that already
// answered once (the VM is up).
const handshakeTimeout = 5 * time.Second

// handshake runs the host side of the stream handshake on c.
func handshake(c net.Conn) (net.Conn, error) {
	var nb [8]byte
	if _, err := rand.Read(nb[:]); err != nil {
		return nil, err
	}
	nonce := hex.EncodeToString(nb[:])
	if _, err := io.WriteString(c, "LIBBOX-HELLO "+nonce+"\n"); err != nil {
		return nil, err
	}
	want := []byte("LIBBOX-READY " + nonce + "\n")
	var buf []byte
	tmp := make([]byte, 4096)
	for {
		n, err := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if i := bytes.Index(buf, want); i >= 0 {
			c.SetDeadline(time.Time{})
			return &prefixConn{Conn: c, pending: buf[i+len(want):]}, nil
		}
		if len(buf) > 64<<10 {
			buf = append([]byte(nil), buf[len(buf)-len(want):]...)
		}
		if err != nil {
			return nil, err
		}
	}
}

// prefixConn returns bytes read past the handshake before reading on.
type prefixConn struct {
	net.Conn
	pending []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
