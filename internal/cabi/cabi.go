// Package cabi loads libbox.so with purego — dlopen plus callbacks made
// with purego.NewCallback — the way the Python and Node bindings load it,
// so Go tests and the bench can drive the real C ABI. It exposes only what
// they need and never outlives the process (callbacks cannot be freed).
package cabi

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Lib is a loaded libbox.so.
type Lib struct {
	ABIVersion   func() uint32
	LiveHandles  func() int64
	runtimeOpen  func(opts string, out *uint64, err **cError) int32
	runtimeClose func(rt uint64, err **cError) int32
	create       func(rt uint64, opts string, progress, done uintptr, ud uintptr, err **cError) int32
	start        func(box uint64, done uintptr, ud uintptr, err **cError) int32
	execAsync    func(box uint64, req string, cbs *callbacks, ud uintptr, out *uint64, err **cError) int32
	Release      func(h uint64, err **cError) int32
	errorFree    func(e *cError)
}

type cError struct {
	code    int32
	message *byte
}

type callbacks struct {
	onStdout, onStderr, onExit uintptr
}

// Exit mirrors box_exit_t.
type Exit struct {
	Status   int32
	ExitCode int32
	Signal   int32
	_        int32
	Duration int64
	message  *byte
}

// Call is one asynchronous call in flight.
type Call struct {
	done   chan struct{}
	Status int32
	Handle uint64
	Msg    string
	Out    strings.Builder
	Exit   Exit
}

var (
	mu      sync.Mutex
	pending = map[uintptr]*Call{}
	nextID  uintptr
)

func register() (uintptr, *Call) {
	mu.Lock()
	defer mu.Unlock()
	nextID++
	c := &Call{done: make(chan struct{})}
	pending[nextID] = c
	return nextID, c
}

func take(ud uintptr, remove bool) *Call {
	mu.Lock()
	defer mu.Unlock()
	c := pending[ud]
	if remove {
		delete(pending, ud)
	}
	return c
}

func cstr(p *byte) string {
	if p == nil {
		return ""
	}
	var b []byte
	for ptr := unsafe.Pointer(p); *(*byte)(ptr) != 0; ptr = unsafe.Add(ptr, 1) {
		b = append(b, *(*byte)(ptr))
	}
	return string(b)
}

var (
	cbOnce                     sync.Once
	onDone, onStdout, onExitCB uintptr
)

func makeCallbacks() {
	onDone = purego.NewCallback(func(ud uintptr, status int32, msg *byte, handle uint64, json *byte) uintptr {
		c := take(ud, true)
		c.Status, c.Handle, c.Msg = status, handle, cstr(msg)
		close(c.done)
		return 0
	})
	onStdout = purego.NewCallback(func(ud uintptr, data *byte, n uintptr) uintptr {
		c := take(ud, false)
		c.Out.Write(unsafe.Slice(data, n))
		return 0
	})
	onExitCB = purego.NewCallback(func(ud uintptr, e *Exit) uintptr {
		c := take(ud, true)
		c.Exit = *e
		c.Msg = cstr(e.message)
		close(c.done)
		return 0
	})
}

// DefaultPath is LIBBOX_LIBRARY, else build/lib/libbox.so above dir.
func DefaultPath(dir string) string {
	if p := os.Getenv("LIBBOX_LIBRARY"); p != "" {
		return p
	}
	for d := dir; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "build", "lib", "libbox.so")
		if _, err := os.Stat(p); err == nil {
			return p
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}

// Load dlopens the library.
func Load(path string) (*Lib, error) {
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return nil, err
	}
	cbOnce.Do(makeCallbacks)
	l := &Lib{}
	for name, fn := range map[string]any{
		"box_abi_version": &l.ABIVersion, "box_live_handles": &l.LiveHandles,
		"box_runtime_open": &l.runtimeOpen, "box_runtime_close": &l.runtimeClose,
		"box_create": &l.create, "box_start": &l.start, "box_exec_async": &l.execAsync,
		"box_release": &l.Release, "box_error_free": &l.errorFree,
	} {
		purego.RegisterLibFunc(fn, h, name)
	}
	return l, nil
}

// Wait waits for the call's callback.
func (c *Call) Wait(d time.Duration) error {
	select {
	case <-c.done:
		return nil
	case <-time.After(d):
		return fmt.Errorf("no callback within %v", d)
	}
}

func (l *Lib) status(st int32, cerr *cError, what string) error {
	if st == 0 {
		return nil
	}
	msg := ""
	if cerr != nil {
		msg = cstr(cerr.message)
		l.errorFree(cerr)
	}
	return fmt.Errorf("%s: status %d: %s", what, st, msg)
}

// OpenRuntime calls box_runtime_open.
func (l *Lib) OpenRuntime(optsJSON string) (uint64, error) {
	var rt uint64
	var cerr *cError
	return rt, l.status(l.runtimeOpen(optsJSON, &rt, &cerr), cerr, "box_runtime_open")
}

// CloseRuntime calls box_runtime_close.
func (l *Lib) CloseRuntime(rt uint64) error {
	var cerr *cError
	return l.status(l.runtimeClose(rt, &cerr), cerr, "box_runtime_close")
}

// CreateStarted creates a box and starts it.
func (l *Lib) CreateStarted(rt uint64, optsJSON string) (uint64, error) {
	ud, c := register()
	var cerr *cError
	if err := l.status(l.create(rt, optsJSON, 0, onDone, ud, &cerr), cerr, "box_create"); err != nil {
		take(ud, true)
		return 0, err
	}
	if err := c.Wait(120 * time.Second); err != nil {
		return 0, err
	}
	if c.Status != 0 {
		return 0, fmt.Errorf("box_create: %s", c.Msg)
	}
	box := c.Handle
	ud, c = register()
	if err := l.status(l.start(box, onDone, ud, &cerr), cerr, "box_start"); err != nil {
		take(ud, true)
		return 0, err
	}
	if err := c.Wait(180 * time.Second); err != nil {
		return 0, err
	}
	if c.Status != 0 {
		return 0, fmt.Errorf("box_start: %s", c.Msg)
	}
	return box, nil
}

// Exec starts an exec with stdout collection; Wait on the Call, then
// Release the returned handle.
func (l *Lib) Exec(box uint64, reqJSON string) (*Call, uint64, error) {
	ud, c := register()
	var h uint64
	var cerr *cError
	cbs := &callbacks{onStdout: onStdout, onExit: onExitCB}
	if err := l.status(l.execAsync(box, reqJSON, cbs, ud, &h, &cerr), cerr, "box_exec_async"); err != nil {
		take(ud, true)
		return nil, 0, err
	}
	return c, h, nil
}
