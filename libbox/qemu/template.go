//go:build linux

package qemu

// VM templates: a box starts by restoring a memory snapshot of an already
// booted agent instead of booting a kernel.
//
// A template is built once per key (see templateKey) by booting a VM of
// that configuration, waiting until its agent answered the stream
// handshake and went back to waiting for the host, pausing it and saving
// its memory and device state with QMP migrate to a file. Its disk (a
// qcow2 overlay on the image's base disk, holding what the guest wrote
// while booting: the ext4 mount) is frozen with it. A box restored from it
// gets a copy of that overlay as its own disk, so the guest's page cache
// and its disk agree, and nothing of the box refers to the template
// afterwards: a template can be dropped or replaced at any time. QEMU
// then starts with the same arguments as the template's, apart from the
// box's own files, and -incoming reading the state file; the agent's port
// comes back disconnected and the host's first dial is a new connection
// with the usual handshake (guest/listen.Serial).
//
// A restored box is a copy of the template's machine: the caller must
// give it its identity (random seed, clock, hostname, box id: agentpb
// Identify) before anything else runs in it.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/bootparam"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/internal/vmboot"
)

const (
	// templateFormat is bumped when what a template holds or how a box
	// is restored from it changes: every older template is then unused.
	templateFormat = 2
	// templateHostname is the template machine's hostname; a restored box
	// keeps it on its kernel command line and gets its own from Identify.
	templateHostname = "libbox-template"
	templateState    = "state"
	// templateRAMFile holds the template's guest RAM: its QEMU maps it
	// shared, so the RAM is the file when the state is saved (and the state
	// leaves it out: x-ignore-shared); a restored box's QEMU maps it
	// private, copy on write, so loading the state reads no RAM at all and
	// the guest's pages come from the host's page cache as it touches them.
	templateRAMFile  = "ram"
	templateMetaFile = "template.json"
	// templateSettle is how long a template's agent gets, after the host's
	// handshake connection closed, to go back to waiting for the host. A
	// snapshot taken earlier still works (the restored agent reads the end
	// of that connection first), this only spares the first dial a retry.
	templateSettle = 300 * time.Millisecond
	// migrateBandwidth lifts QEMU's default migration cap (32 MiB/s): the
	// state goes to a local file.
	migrateBandwidth = 8 << 30
)

var _ backend.Templates = (*Backend)(nil)

// templateMeta describes a complete template; it is written last.
type templateMeta struct {
	Format int    `json:"format"`
	Key    string `json:"key"`
	// Argv are the template QEMU's arguments with the box's own parts
	// replaced (normalArgs): a box restores only with the same.
	Argv       []string `json:"argv"`
	ImageID    string   `json:"image_id"`
	CPUs       int      `json:"cpus"`
	MemoryMiB  int      `json:"memory_mib"`
	Rung       string   `json:"rung"`
	Kernel     string   `json:"kernel"`
	StateBytes int64    `json:"state_bytes"`
	DiskBytes  int64    `json:"disk_bytes"`
	// RAMBytes is the disk space its RAM file takes (zero pages are holes).
	RAMBytes  int64     `json:"ram_bytes"`
	BuildMS   int64     `json:"build_ms"`
	CreatedAt time.Time `json:"created_at"`
}

// templateEligible says whether a box of spec can start from a template:
// virtiofs daemons and user networking keep state outside the guest that
// a memory snapshot cannot carry.
func templateEligible(spec backend.Spec) error {
	if len(spec.Volumes) > 0 {
		return errdefs.New(errdefs.FailedPrecondition, "VM template: a box with volumes boots its kernel (virtiofs state is not part of a memory snapshot)")
	}
	if spec.Network {
		return errdefs.New(errdefs.FailedPrecondition, "VM template: a box with a network boots its kernel (its network identity cannot be given to a restored box yet)")
	}
	return nil
}

func (b *Backend) templateRoot() string { return filepath.Join(b.cache, "templates") }

// templateKey names a template by everything its snapshot depends on: the
// QEMU binary, the kernel, the initramfs (named by the agent's content),
// the image's base disk, the accelerator rung, CPUs, memory, the debug
// switch and templateFormat. The arguments QEMU gets are checked on top
// (templateMeta.Argv) when a box restores.
func (b *Backend) templateKey(pr *prepared, spec backend.Spec) (string, error) {
	cpus, mem := vmboot.Limits(spec.CPUs, spec.MemoryMiB)
	h := sha256.New()
	fmt.Fprintf(h, "format %d\nrung %s\ncpus %d\nmem %d\ndebug %t\n", templateFormat, pr.rung.Name, cpus, mem, b.opts.VMDebug)
	for _, f := range []string{pr.qemuBin, pr.kernel.Image, pr.initrd, pr.base} {
		st, err := os.Stat(f)
		if err != nil {
			return "", errdefs.Wrap(errdefs.NotFound, err, "VM template key")
		}
		fmt.Fprintf(h, "file %s %d %d\n", f, st.Size(), st.ModTime().UnixNano())
	}
	fmt.Fprintf(h, "modules %s\n", pr.kernel.Modules)
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

// normalArgs are QEMU's arguments for spec without the box's own parts
// (directory, id, hostname), so a box's and its template's compare equal.
func normalArgs(args []string, spec backend.Spec) []string {
	out := make([]string, len(args))
	for i, a := range args {
		a = strings.ReplaceAll(a, qemuPath(spec.Dir), "@DIR")
		a = strings.ReplaceAll(a, spec.Dir, "@DIR")
		if a == qemuPath("libbox-"+spec.ID) {
			a = "@NAME"
		}
		out[i] = replaceHostname(a, "@HOST")
	}
	return out
}

// replaceHostname replaces the hostname parameter of a kernel command
// line (any other argument is returned as is).
func replaceHostname(arg, host string) string {
	words := strings.Fields(arg)
	changed := false
	for i, w := range words {
		if strings.HasPrefix(w, bootparam.ParamHostname+"=") {
			words[i] = bootparam.ParamHostname + "=" + host
			changed = true
		}
	}
	if !changed {
		return arg
	}
	return strings.Join(words, " ")
}

// readTemplate returns the complete template of key, or nil.
func (b *Backend) readTemplate(key string) *templateMeta {
	var m templateMeta
	raw, err := os.ReadFile(filepath.Join(b.templateRoot(), key, templateMetaFile))
	if err != nil || json.Unmarshal(raw, &m) != nil || m.Format != templateFormat || m.Key != key {
		return nil
	}
	return &m
}

// startDisk makes a new box's disk and returns QEMU's arguments for it:
// restored from the template of its key when spec asks for one, the disk
// is new and the template matches args; else a fresh overlay on the base.
// tmpl is the template's key ("" for a boot).
func (b *Backend) startDisk(ctx context.Context, spec backend.Spec, pr *prepared, args []string, fresh bool) (_ []string, tmpl string, err error) {
	disk := filepath.Join(spec.Dir, diskName)
	boot := func() ([]string, string, error) {
		_, err := overlayDisk(ctx, spec.Dir, pr.base)
		return args, "", err
	}
	if !spec.FromTemplate || !fresh || spec.Hostname == "" || templateEligible(spec) != nil {
		return boot()
	}
	key, err := b.templateKey(pr, spec)
	if err != nil {
		return boot()
	}
	m := b.readTemplate(key)
	if m == nil {
		return boot()
	}
	if !slices.Equal(m.Argv, normalArgs(args, spec)) {
		b.dropTemplate(key, errors.New("it was built with other QEMU arguments"))
		return boot()
	}
	dir := filepath.Join(b.templateRoot(), key)
	if err := copyFile(filepath.Join(dir, diskName), disk); err != nil {
		b.logf("libbox: VM template %s: copying its disk: %v: booting instead", key, err)
		_ = os.Remove(disk)
		return boot()
	}
	out := make([]string, 0, len(args)+2)
	for _, a := range args {
		out = append(out, replaceHostname(a, templateHostname))
	}
	out = append(out, "-incoming", "defer") // waitRestored hands QEMU the state file
	return out, key, nil
}

// waitRestored returns once QEMU loaded the template's state and runs the
// machine: the status goes from "inmigrate" to "paused" (the template was
// saved paused), then the machine is resumed. It fails when QEMU exits.
// from is the state file: a template's or a memory snapshot's. One QMP
// connection serves the whole conversation.
func (i *instance) waitRestored(ctx context.Context, from string) error {
	ctx, cancel := context.WithTimeout(ctx, i.bootTimeout)
	defer cancel()
	what := "template " + i.template
	if i.resumed != "" {
		what = "memory snapshot " + i.resumed
	}
	fail := func(err error) error {
		if i.p.exited() {
			return i.unavailable()
		}
		if ctx.Err() != nil {
			return errdefs.Wrap(errdefs.CodeOf(ctx.Err()), err, "vm %s: restoring %s", i.spec.ID, what)
		}
		return errdefs.Wrap(errdefs.Internal, err, "vm %s: restoring %s", i.spec.ID, what)
	}
	state, err := os.Open(from)
	if err != nil {
		return errdefs.Wrap(errdefs.Unavailable, err, "vm %s: %s", i.spec.ID, what)
	}
	defer state.Close()
	q, err := dialQMP(ctx, i.files.qmpSock)
	if err != nil {
		return fail(err)
	}
	defer q.close()
	stop := context.AfterFunc(ctx, func() { q.c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if i.template != "" { // the template's RAM is its file, not in the state
		err = q.run("migrate-set-capabilities", ignoreShared(true))
	}
	if err == nil {
		err = q.sendFD(state)
	}
	if err == nil {
		err = q.run("migrate-incoming", map[string]any{"uri": "fd:" + qmpFD})
	}
	for err == nil {
		var raw json.RawMessage
		if raw, err = q.call("query-status", nil); err != nil {
			break
		}
		var st struct{ Status string }
		_ = json.Unmarshal(raw, &st)
		switch st.Status {
		case "running":
			return nil
		case "paused": // loaded; it was saved paused
			err = q.run("cont", nil)
			continue
		case "inmigrate", "prelaunch", "restore-vm", "finish-migrate":
		default:
			return errdefs.New(errdefs.Internal, "vm %s: restoring %s: machine is %q", i.spec.ID, what, st.Status)
		}
		err = vmboot.SleepCtx(ctx, 2*time.Millisecond)
	}
	return fail(err)
}

// Restored reports whether the VM started from a template or resumed a
// memory snapshot.
func (i *instance) Restored() bool { return i.template != "" || i.resumed != "" }

// dropTemplate removes a template that cannot be used (boxes restored
// from it do not refer to it).
func (b *Backend) dropTemplate(key string, why error) {
	b.logf("libbox: VM template %s dropped: %v", key, why)
	removeTemplateDir(filepath.Join(b.templateRoot(), key))
}

// removeTemplateDir takes a template out of use at once (rename), then
// deletes it.
func removeTemplateDir(dir string) {
	old := dir + ".old-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if os.Rename(dir, old) == nil {
		_ = os.RemoveAll(old)
	}
}

// Warm builds the template of spec's configuration unless it exists (see
// backend.Templates).
func (b *Backend) Warm(ctx context.Context, spec backend.Spec, wait bool) (bool, error) {
	if err := templateEligible(spec); err != nil {
		return false, err
	}
	pr, err := b.prepare(ctx, spec)
	if err != nil {
		return false, err
	}
	key, err := b.templateKey(pr, spec)
	if err != nil {
		return false, err
	}
	if b.readTemplate(key) != nil {
		return false, nil
	}
	root := b.templateRoot()
	if err := os.MkdirAll(root, 0o700); err != nil {
		return false, errdefs.Wrap(errdefs.Internal, err, "VM templates")
	}
	unlock, err := lockFile(ctx, filepath.Join(root, key+".lock"), wait)
	if err != nil || unlock == nil {
		return false, err
	}
	defer unlock()
	if b.readTemplate(key) != nil {
		return false, nil // built meanwhile
	}
	if err := b.buildTemplate(ctx, spec, key); err != nil {
		return false, err
	}
	b.dropSuperseded(key)
	return true, nil
}

// buildTemplate boots a template VM, snapshots it and installs it under
// its key. The caller holds the key's lock.
func (b *Backend) buildTemplate(ctx context.Context, spec backend.Spec, key string) (err error) {
	t0 := time.Now()
	tmp, err := os.MkdirTemp(b.templateRoot(), "build-")
	if err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "VM template")
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	ts := spec
	ts.ID, ts.Dir, ts.Hostname = "template-"+key[:12], tmp, templateHostname
	ts.FromTemplate, ts.Detach = false, false
	bi, err := b.start(ctx, ts, filepath.Join(tmp, templateRAMFile))
	if err != nil {
		return err
	}
	inst := bi.(*instance)
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), qmpTimeout+killTimeout)
		defer cancel()
		inst.Kill()
		_ = inst.Stop(sctx)
	}()
	conn, err := inst.Dial(ctx) // the agent serves: its boot is done
	if err != nil {
		return err
	}
	conn.Close()
	if err := vmboot.SleepCtx(ctx, templateSettle); err != nil {
		return err
	}
	state := filepath.Join(tmp, templateState)
	if err := inst.saveState(ctx, state); err != nil {
		return err
	}
	// The state is complete and the disk flushed and released: QEMU can go.
	inst.Kill()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), qmpTimeout+killTimeout)
	err = inst.Stop(sctx)
	cancel()
	if err != nil {
		return err
	}
	ram := filepath.Join(tmp, templateRAMFile)
	if err := punchZeroPages(ram); err != nil { // it works without
		b.logf("libbox: VM template %s: making its RAM file sparse: %v", key, err)
	}
	cpus, mem := vmboot.Limits(spec.CPUs, spec.MemoryMiB)
	m := templateMeta{
		Format: templateFormat, Key: key, Argv: normalArgs(inst.args, ts),
		ImageID: spec.ImageID, CPUs: cpus, MemoryMiB: mem, Rung: inst.rung, Kernel: inst.kernel.Image,
		StateBytes: fileSize(state), DiskBytes: fileSize(filepath.Join(tmp, diskName)), RAMBytes: allocated(ram),
		CreatedAt: time.Now().UTC(),
	}
	m.BuildMS = time.Since(t0).Milliseconds()
	raw, _ := json.MarshalIndent(m, "", "  ")
	if err := vmboot.WriteFileAtomic(filepath.Join(tmp, templateMetaFile), raw); err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "VM template")
	}
	dir := filepath.Join(b.templateRoot(), key)
	removeTemplateDir(dir) // an incomplete or stale one
	if err := os.Rename(tmp, dir); err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "VM template")
	}
	b.logf("libbox: VM template %s built in %s (state %d KiB, RAM %d MiB on disk)", key, time.Since(t0).Round(time.Millisecond), m.StateBytes>>10, m.RAMBytes>>20)
	return nil
}

// saveState pauses the VM and writes its memory and device state to path
// (QMP migrate to an fd: QEMU 7.2 has no file: migration, and its jail
// allows no exec: URI), waiting until the migration completed.
func (i *instance) saveState(ctx context.Context, path string) error {
	if _, err := qmp(ctx, i.files.qmpSock, "stop"); err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "vm %s: saving its state", i.spec.ID)
	}
	if err := ignoreSharedRAM(ctx, i.files.qmpSock, true); err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "vm %s: saving its state", i.spec.ID)
	}
	return i.writeState(ctx, path)
}

// ramArgs puts the guest's RAM in a memory backend object of its own (id
// "ram", anonymous memory), so that ramFile can swap it for a file with
// nothing else of the machine changed.
func ramArgs(args []string, memMiB int) []string {
	out := make([]string, 0, len(args)+2)
	for i, a := range args {
		if i > 0 && args[i-1] == "-machine" {
			a += ",memory-backend=ram"
		}
		out = append(out, a)
	}
	return append(out, "-object", fmt.Sprintf("memory-backend-ram,id=ram,size=%dM", memMiB))
}

// ramFile returns args (see ramArgs) with the guest's RAM in file, mapped
// shared (the template's own QEMU) or private (copy on write: a restored
// box's).
func ramFile(args []string, file string, shared bool) []string {
	out := slices.Clone(args)
	share := "off"
	if shared {
		share = "on"
	}
	for i, a := range out {
		if rest, ok := strings.CutPrefix(a, "memory-backend-ram,id=ram,"); ok {
			out[i] = "memory-backend-file,id=ram," + rest + ",mem-path=" + file + ",share=" + share
		}
	}
	return out
}

// ignoreSharedRAM leaves shared RAM out of a migration (the template's
// RAM file), on the saving side and, so that both read the same stream,
// on the restoring one.
func ignoreSharedRAM(ctx context.Context, sock string, on bool) error {
	_, err := qmpExec(ctx, sock, "migrate-set-capabilities", ignoreShared(on))
	return err
}

func ignoreShared(on bool) map[string]any {
	return map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": on}}}
}

// writeState writes the paused VM's memory and device state to path (see
// saveState). The machine stays paused: after it, QMP cont resumes it.
func (i *instance) writeState(ctx context.Context, path string) error {
	sock := i.files.qmpSock
	fail := func(err error) error {
		return errdefs.Wrap(errdefs.Internal, err, "vm %s: saving its state", i.spec.ID)
	}
	if _, err := qmpExec(ctx, sock, "migrate-set-parameters", map[string]any{"max-bandwidth": migrateBandwidth}); err != nil {
		return fail(err)
	}
	out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fail(err)
	}
	defer out.Close() // QEMU writes its own copy
	if _, err := qmpRun(ctx, sock, out, "migrate", map[string]any{"uri": "fd:" + qmpFD}); err != nil {
		return fail(err)
	}
	for {
		raw, err := qmp(ctx, sock, "query-migrate")
		if err != nil {
			return fail(err)
		}
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		_ = json.Unmarshal(raw, &st)
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fail(fmt.Errorf("migration %s: %s (qemu: %s)", st.Status, st.ErrorDesc, oneLine(readTail(i.files.stderr, 512))))
		}
		if err := vmboot.SleepCtx(ctx, 10*time.Millisecond); err != nil {
			return errdefs.Wrap(errdefs.CodeOf(err), err, "vm %s: saving its state", i.spec.ID)
		}
	}
}

// dropSuperseded removes the templates of the same image, CPUs and memory
// as key's whose key differs (a kernel, agent, QEMU or machine change):
// they can never be restored again.
func (b *Backend) dropSuperseded(key string) {
	cur := b.readTemplate(key)
	if cur == nil {
		return
	}
	ents, _ := os.ReadDir(b.templateRoot())
	for _, e := range ents {
		if !e.IsDir() || e.Name() == key {
			continue
		}
		if m := b.readTemplate(e.Name()); m != nil && m.ImageID == cur.ImageID && m.CPUs == cur.CPUs && m.MemoryMiB == cur.MemoryMiB {
			b.dropTemplate(e.Name(), fmt.Errorf("superseded by %s", key))
		}
	}
}

// lockFile takes an exclusive lock on path, waiting (bounded by ctx) when
// wait, else returning a nil unlock when another holder has it.
func lockFile(ctx context.Context, path string, wait bool) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "lock %s", path)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, errdefs.Wrap(errdefs.Internal, err, "lock %s", path)
		}
		if !wait {
			f.Close()
			return nil, nil
		}
		if err := vmboot.SleepCtx(ctx, 50*time.Millisecond); err != nil {
			f.Close()
			return nil, errdefs.Wrap(errdefs.CodeOf(err), err, "waiting for %s", path)
		}
	}
}

// copyFile copies src to a new file dst (a reflink where the file system
// has them), atomically.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) != nil {
		_, err = io.Copy(out, in)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

// punchZeroPages turns the all-zero pages of a template's RAM file into
// holes: the guest zeroes what it frees (init_on_free), so most of its RAM
// takes no disk space and no page cache.
func punchZeroPages(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	const page = 4096
	buf := make([]byte, 256*page)
	var off int64
	for {
		n, err := io.ReadFull(f, buf)
		for p := 0; p+page <= n; {
			q := p
			for q+page <= n && isZero(buf[q:q+page]) {
				q += page
			}
			if q > p {
				if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off+int64(p), int64(q-p)); err != nil {
					return err
				}
				p = q
			} else {
				p += page
			}
		}
		off += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

var zeroPage [4096]byte

func isZero(b []byte) bool { return bytes.Equal(b, zeroPage[:]) }

// allocated is the disk space a file takes.
func allocated(path string) int64 {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return st.Blocks * 512
}
