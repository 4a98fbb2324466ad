// Package bridge is everything behind the C ABI except cgo: the handle
// table, JSON option bags, and the asynchronous calls with their
// exactly-once completion rules. libbox/capi only converts C types and
// calls in here, so all of this is testable from Go.
//
// Callbacks given to this package are called from goroutines it owns,
// never while it holds a lock: a callback may call back into the bridge.
package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox"
	"github.com/libbox/libbox/libbox/image"
)

// ABIVersion matches LIBBOX_ABI_VERSION in include/libbox.h.
const ABIVersion = 1

// Done is the completion of an asynchronous call: status 0 and the handle
// (or 0) and result JSON (or ""), or an error status and message.
type Done func(status int32, msg string, handle uint64, json string)

// Progress reports image pull progress.
type Progress func(layer string, done, total int64)

// ExitInfo is how an exec ended.
type ExitInfo struct {
	Status   int32 // 0 when the process ran and ended
	ExitCode int32
	Signal   int32
	Duration time.Duration
	Message  string
}

// ExecCallbacks receive an exec's output and end; any may be nil.
type ExecCallbacks struct {
	Stdout func([]byte)
	Stderr func([]byte)
	Exit   func(ExitInfo)
}

// Error is a failed call: a status code and a message.
type Error struct {
	Code int32
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func fail(c errdefs.Code, format string, args ...any) error {
	return &Error{Code: int32(c), Msg: fmt.Sprintf(format, args...)}
}

// Status converts any error to (status, message).
func Status(err error) (int32, string) {
	if err == nil {
		return 0, ""
	}
	if e, ok := err.(*Error); ok {
		return e.Code, e.Msg
	}
	return int32(errdefs.CodeOf(err)), err.Error()
}

type kind int

const (
	kindRuntime kind = iota + 1
	kindBox
	kindExec
)

func (k kind) String() string {
	return [...]string{"", "runtime", "box", "exec"}[k]
}

type entry struct {
	kind kind
	rt   *runtimeEntry // owning runtime
	box  *libbox.Box   // kindBox
	exec *execEntry    // kindExec
}

type runtimeEntry struct {
	rt *libbox.Runtime
	// ops tracks asynchronous calls in flight on this runtime.
	ops sync.WaitGroup
	// ctx is cancelled by close: every exec of this runtime is killed.
	ctx    context.Context
	cancel context.CancelFunc
}

var (
	mu sync.Mutex
	// handles is the table of every live handle. Guarded by mu.
	handles = map[uint64]*entry{}
	next    atomic.Uint64
)

func add(e *entry) uint64 {
	h := next.Add(1)
	mu.Lock()
	handles[h] = e
	mu.Unlock()
	return h
}

func lookup(h uint64, k kind) (*entry, error) {
	mu.Lock()
	e, ok := handles[h]
	mu.Unlock()
	if !ok {
		if h == 0 {
			return nil, fail(errdefs.InvalidArgument, "%s handle is 0 (null)", k)
		}
		return nil, fail(errdefs.InvalidArgument, "unknown or released handle %d", h)
	}
	if e.kind != k {
		return nil, fail(errdefs.InvalidArgument, "handle %d is a %s handle, not a %s handle", h, e.kind, k)
	}
	return e, nil
}

// LiveHandles counts live handles of every kind.
func LiveHandles() int64 {
	mu.Lock()
	defer mu.Unlock()
	return int64(len(handles))
}

// Release drops a box or exec handle.
func Release(h uint64) error {
	mu.Lock()
	defer mu.Unlock()
	e, ok := handles[h]
	if !ok {
		return fail(errdefs.InvalidArgument, "unknown or released handle %d", h)
	}
	if e.kind == kindRuntime {
		return fail(errdefs.InvalidArgument, "handle %d is a runtime: close it with box_runtime_close", h)
	}
	delete(handles, h)
	return nil
}

// decode parses a JSON object strictly into v ("" and "null" mean {}).
func decode(what, s string, v any) error {
	s = strings.TrimSpace(s)
	if s == "" || s == "null" {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fail(errdefs.InvalidArgument, "%s: invalid JSON: %v", what, err)
	}
	if dec.More() {
		return fail(errdefs.InvalidArgument, "%s: invalid JSON: trailing data", what)
	}
	return nil
}

func envList(m map[string]string) ([]string, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, fail(errdefs.InvalidArgument, "env key %q: must be non-empty without '=' or NUL", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + "=" + m[k]
	}
	return out, nil
}

// RuntimeOpen opens a runtime. opts: {"home": "..."}.
func RuntimeOpen(optsJSON string) (uint64, error) {
	var o struct {
		Home string `json:"home"`
	}
	if err := decode("runtime options", optsJSON, &o); err != nil {
		return 0, err
	}
	rt, err := libbox.Open(libbox.Options{Home: o.Home})
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return add(&entry{kind: kindRuntime, rt: &runtimeEntry{rt: rt, ctx: ctx, cancel: cancel}}), nil
}

// RuntimeClose cancels the runtime's execs, waits for its asynchronous
// calls to complete, closes it and drops every handle that came from it.
func RuntimeClose(h uint64) error {
	mu.Lock()
	e, ok := handles[h]
	if ok && e.kind == kindRuntime {
		delete(handles, h)
	}
	mu.Unlock()
	if !ok {
		return fail(errdefs.InvalidArgument, "unknown or released runtime handle %d", h)
	}
	if e.kind != kindRuntime {
		mu.Lock()
		handles[h] = e
		mu.Unlock()
		return fail(errdefs.InvalidArgument, "handle %d is a %s handle, not a runtime handle", h, e.kind)
	}
	re := e.rt
	re.cancel()
	re.ops.Wait()
	err := re.rt.Close()
	mu.Lock()
	for k, v := range handles {
		if v.rt == re {
			delete(handles, k)
		}
	}
	mu.Unlock()
	return err
}

// async runs fn on a goroutine tracked by the runtime and completes done
// exactly once.
func async(re *runtimeEntry, done Done, fn func(ctx context.Context) (uint64, string, error)) {
	re.ops.Add(1)
	go func() {
		defer re.ops.Done()
		h, js, err := fn(re.ctx)
		st, msg := Status(err)
		if err != nil {
			h, js = 0, ""
		}
		done(st, msg, h, js)
	}()
}

type boxOptions struct {
	Image      string            `json:"image"`
	Name       string            `json:"name"`
	Isolation  string            `json:"isolation"`
	CPUs       int               `json:"cpus"`
	MemoryMiB  int               `json:"memory_mib"`
	Env        map[string]string `json:"env"`
	Cwd        string            `json:"cwd"`
	Network    bool              `json:"network"`
	AutoRemove bool              `json:"auto_remove"`
	Detach     bool              `json:"detach"`
	Volumes    []struct {
		Host     string `json:"host"`
		Box      string `json:"box"`
		ReadOnly bool   `json:"read_only"`
	} `json:"volumes"`
}

// Create makes a box asynchronously; done gets the new box handle.
func Create(rtH uint64, optsJSON string, progress Progress, done Done) error {
	if done == nil {
		return fail(errdefs.InvalidArgument, "box_create: the completion callback is NULL")
	}
	e, err := lookup(rtH, kindRuntime)
	if err != nil {
		return err
	}
	var o boxOptions
	if err := decode("box options", optsJSON, &o); err != nil {
		return err
	}
	env, err := envList(o.Env)
	if err != nil {
		return err
	}
	bo := libbox.BoxOptions{
		Image: o.Image, Name: o.Name, Isolation: o.Isolation, CPUs: o.CPUs, MemoryMiB: o.MemoryMiB,
		Env: env, WorkingDir: o.Cwd, Network: o.Network, AutoRemove: o.AutoRemove, Detach: o.Detach,
	}
	for _, v := range o.Volumes {
		bo.Volumes = append(bo.Volumes, libbox.Volume{HostPath: v.Host, BoxPath: v.Box, ReadOnly: v.ReadOnly})
	}
	if progress != nil {
		bo.Progress = func(p image.Progress) { progress(p.Layer, p.Done, p.Total) }
	}
	re := e.rt
	async(re, done, func(ctx context.Context) (uint64, string, error) {
		b, err := re.rt.Create(ctx, bo)
		if err != nil {
			return 0, "", err
		}
		return add(&entry{kind: kindBox, rt: re, box: b}), "", nil
	})
	return nil
}

// Get returns a new handle on an existing box.
func Get(rtH uint64, idOrName string) (uint64, error) {
	e, err := lookup(rtH, kindRuntime)
	if err != nil {
		return 0, err
	}
	b, err := e.rt.rt.Get(e.rt.ctx, idOrName)
	if err != nil {
		return 0, err
	}
	return add(&entry{kind: kindBox, rt: e.rt, box: b}), nil
}

// List describes every box as a JSON array.
func List(rtH uint64) (string, error) {
	e, err := lookup(rtH, kindRuntime)
	if err != nil {
		return "", err
	}
	infos, err := e.rt.rt.List(e.rt.ctx)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(infos)
	return string(b), err
}

// Info describes one box as a JSON object.
func Info(boxH uint64) (string, error) {
	e, err := lookup(boxH, kindBox)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(e.box.Info())
	return string(b), err
}

func boxAsync(boxH uint64, done Done, what string, fn func(ctx context.Context, b *libbox.Box) (string, error)) error {
	if done == nil {
		return fail(errdefs.InvalidArgument, "%s: the completion callback is NULL", what)
	}
	e, err := lookup(boxH, kindBox)
	if err != nil {
		return err
	}
	async(e.rt, done, func(ctx context.Context) (uint64, string, error) {
		js, err := fn(ctx, e.box)
		return 0, js, err
	})
	return nil
}

// Start boots a box asynchronously.
func Start(boxH uint64, done Done) error {
	return boxAsync(boxH, done, "box_start", func(ctx context.Context, b *libbox.Box) (string, error) {
		return "", b.Start(ctx)
	})
}

// Stop stops a box asynchronously.
func Stop(boxH uint64, done Done) error {
	return boxAsync(boxH, done, "box_stop", func(ctx context.Context, b *libbox.Box) (string, error) {
		// A stop runs to its end even when the runtime closes meanwhile.
		return "", b.Stop(context.WithoutCancel(ctx))
	})
}

// Remove deletes a box asynchronously.
func Remove(rtH uint64, idOrName string, force bool, done Done) error {
	if done == nil {
		return fail(errdefs.InvalidArgument, "box_remove: the completion callback is NULL")
	}
	e, err := lookup(rtH, kindRuntime)
	if err != nil {
		return err
	}
	if idOrName == "" {
		return fail(errdefs.InvalidArgument, "box_remove: box id or name is empty")
	}
	re := e.rt
	async(re, done, func(ctx context.Context) (uint64, string, error) {
		return 0, "", re.rt.Remove(context.WithoutCancel(ctx), idOrName, force)
	})
	return nil
}

// CopyIn copies a host path into a box asynchronously.
func CopyIn(boxH uint64, host, boxPath string, done Done) error {
	if host == "" || boxPath == "" {
		return fail(errdefs.InvalidArgument, "box_copy_in: host and box paths are required")
	}
	return boxAsync(boxH, done, "box_copy_in", func(ctx context.Context, b *libbox.Box) (string, error) {
		n, err := b.CopyIn(ctx, host, boxPath)
		return fmt.Sprintf(`{"bytes":%d}`, n), err
	})
}

// CopyOut copies a box path to the host asynchronously.
func CopyOut(boxH uint64, boxPath, host string, done Done) error {
	if host == "" || boxPath == "" {
		return fail(errdefs.InvalidArgument, "box_copy_out: box and host paths are required")
	}
	return boxAsync(boxH, done, "box_copy_out", func(ctx context.Context, b *libbox.Box) (string, error) {
		n, err := b.CopyOut(ctx, boxPath, host)
		return fmt.Sprintf(`{"bytes":%d}`, n), err
	})
}

type execRequest struct {
	Args      []string          `json:"args"`
	Env       map[string]string `json:"env"`
	Cwd       string            `json:"cwd"`
	User      string            `json:"user"`
	TTY       bool              `json:"tty"`
	Rows      uint32            `json:"rows"`
	Cols      uint32            `json:"cols"`
	TimeoutMs int64             `json:"timeout_ms"`
	Stdin     bool              `json:"stdin"`
}

// execEntry is one exec: the process once spawned, and its control.
type execEntry struct {
	ready  chan struct{} // closed once proc is set or the spawn failed
	proc   *libbox.Process
	cancel context.CancelFunc
	ended  atomic.Bool
}

// Exec starts a command asynchronously. Callbacks come from goroutines of
// the bridge: output in order, then exactly one Exit.
func Exec(boxH uint64, reqJSON string, cbs ExecCallbacks) (uint64, error) {
	e, err := lookup(boxH, kindBox)
	if err != nil {
		return 0, err
	}
	if strings.TrimSpace(reqJSON) == "" {
		return 0, fail(errdefs.InvalidArgument, "exec request is empty: give at least {\"args\": [\"cmd\"]}")
	}
	var r execRequest
	if err := decode("exec request", reqJSON, &r); err != nil {
		return 0, err
	}
	if len(r.Args) == 0 || r.Args[0] == "" {
		return 0, fail(errdefs.InvalidArgument, "exec request: args must name a command")
	}
	if r.TimeoutMs < 0 {
		return 0, fail(errdefs.InvalidArgument, "exec request: timeout_ms %d is negative", r.TimeoutMs)
	}
	env, err := envList(r.Env)
	if err != nil {
		return 0, err
	}
	if !e.box.Running() {
		return 0, fail(errdefs.FailedPrecondition, "box %s is not running: start it first", e.box.ID())
	}
	cmd := libbox.Command{
		Args: r.Args, Env: env, Dir: r.Cwd, User: r.User, TTY: r.TTY, Rows: r.Rows, Cols: r.Cols,
		OpenStdin: r.Stdin, Timeout: time.Duration(r.TimeoutMs) * time.Millisecond,
		Stdout: callbackWriter(cbs.Stdout), Stderr: callbackWriter(cbs.Stderr),
	}
	re := e.rt
	ctx, cancel := context.WithCancel(re.ctx)
	ee := &execEntry{ready: make(chan struct{}), cancel: cancel}
	h := add(&entry{kind: kindExec, rt: re, exec: ee})
	re.ops.Add(1)
	go func() {
		defer re.ops.Done()
		defer cancel()
		info := ExitInfo{ExitCode: -1}
		p, err := e.box.Exec(ctx, cmd)
		if err == nil {
			ee.proc = p
			close(ee.ready)
			st, werr := p.Wait(context.Background())
			info = ExitInfo{ExitCode: int32(st.ExitCode), Signal: int32(st.Signal), Duration: st.Duration}
			err = werr
		} else {
			close(ee.ready)
		}
		if err != nil {
			info.Status, info.Message = Status(err)
		}
		ee.ended.Store(true)
		if cbs.Exit != nil {
			cbs.Exit(info)
		}
	}()
	return h, nil
}

// callbackWriter turns an output callback into an io.Writer (nil: discard).
func callbackWriter(fn func([]byte)) io.Writer {
	if fn == nil {
		return io.Discard
	}
	return writerFunc(fn)
}

type writerFunc func([]byte)

func (f writerFunc) Write(p []byte) (int, error) {
	f(p)
	return len(p), nil
}

func execOf(h uint64) (*execEntry, error) {
	e, err := lookup(h, kindExec)
	if err != nil {
		return nil, err
	}
	<-e.exec.ready
	if e.exec.proc == nil {
		return nil, fail(errdefs.FailedPrecondition, "exec %d did not start (see its on_exit)", h)
	}
	return e.exec, nil
}

// WriteStdin feeds the exec's stdin; it may block (flow control).
func WriteStdin(h uint64, data []byte) error {
	ee, err := execOf(h)
	if err != nil {
		return err
	}
	if len(data) == 0 {
		return nil
	}
	if ee.ended.Load() {
		return fail(errdefs.FailedPrecondition, "exec %d has exited: cannot write stdin", h)
	}
	_, err = ee.proc.Write(bytes.Clone(data))
	return err
}

// CloseStdin closes the exec's stdin.
func CloseStdin(h uint64) error {
	ee, err := execOf(h)
	if err != nil {
		return err
	}
	return ee.proc.CloseStdin()
}

// Signal signals the exec's process group.
func Signal(h uint64, sig int32) error {
	ee, err := execOf(h)
	if err != nil {
		return err
	}
	if ee.ended.Load() {
		return fail(errdefs.FailedPrecondition, "exec %d has exited: cannot signal", h)
	}
	return ee.proc.Signal(syscall.Signal(sig))
}

// Resize resizes the exec's terminal.
func Resize(h uint64, rows, cols uint32) error {
	ee, err := execOf(h)
	if err != nil {
		return err
	}
	return ee.proc.Resize(rows, cols)
}

// Cancel kills the exec's process group (on_exit reports Canceled).
func Cancel(h uint64) error {
	e, err := lookup(h, kindExec)
	if err != nil {
		return err
	}
	ee := e.exec
	select {
	case <-ee.ready:
		if ee.proc != nil {
			ee.proc.Cancel()
		}
	default:
		ee.cancel() // not spawned yet: the spawn is abandoned
	}
	return nil
}

// imageJSON is an image as the C ABI describes it.
type imageJSON struct {
	Ref     string    `json:"ref"`
	ID      string    `json:"id"`
	Root    string    `json:"root"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
	Config  struct {
		Env        []string `json:"env"`
		WorkingDir string   `json:"working_dir"`
		User       string   `json:"user"`
		Entrypoint []string `json:"entrypoint"`
		Cmd        []string `json:"cmd"`
	} `json:"config"`
}

func toImageJSON(img image.Image) imageJSON {
	j := imageJSON{Ref: img.Ref, ID: img.ID, Root: img.Root, Size: img.Size, Created: img.Created}
	j.Config.Env, j.Config.WorkingDir, j.Config.User = img.Config.Env, img.Config.WorkingDir, img.Config.User
	j.Config.Entrypoint, j.Config.Cmd = img.Config.Entrypoint, img.Config.Cmd
	return j
}

// Pull fetches an image asynchronously; done gets it as JSON.
func Pull(rtH uint64, ref string, progress Progress, done Done) error {
	if done == nil {
		return fail(errdefs.InvalidArgument, "box_pull: the completion callback is NULL")
	}
	e, err := lookup(rtH, kindRuntime)
	if err != nil {
		return err
	}
	var pf func(image.Progress)
	if progress != nil {
		pf = func(p image.Progress) { progress(p.Layer, p.Done, p.Total) }
	}
	re := e.rt
	async(re, done, func(ctx context.Context) (uint64, string, error) {
		img, err := re.rt.PullImage(ctx, ref, pf)
		if err != nil {
			return 0, "", err
		}
		b, err := json.Marshal(toImageJSON(*img))
		return 0, string(b), err
	})
	return nil
}

// Images lists stored images as JSON.
func Images(rtH uint64) (string, error) {
	e, err := lookup(rtH, kindRuntime)
	if err != nil {
		return "", err
	}
	imgs, err := e.rt.rt.Images(e.rt.ctx)
	if err != nil {
		return "", err
	}
	out := make([]imageJSON, len(imgs))
	for i, img := range imgs {
		out[i] = toImageJSON(img)
	}
	b, err := json.Marshal(out)
	return string(b), err
}

// RemoveImage deletes an image asynchronously.
func RemoveImage(rtH uint64, ref string, force bool, done Done) error {
	if done == nil {
		return fail(errdefs.InvalidArgument, "box_image_remove: the completion callback is NULL")
	}
	e, err := lookup(rtH, kindRuntime)
	if err != nil {
		return err
	}
	re := e.rt
	async(re, done, func(ctx context.Context) (uint64, string, error) {
		return 0, "", re.rt.RemoveImage(ctx, ref, force)
	})
	return nil
}
