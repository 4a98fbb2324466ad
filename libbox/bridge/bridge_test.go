package bridge_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/bridge"
)

func requireSandbox(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if b, err := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); err == nil && strings.TrimSpace(string(b)) == "0" {
			t.Skip("namespace sandbox needs root or kernel.unprivileged_userns_clone=1")
		}
	}
}

// completions records every completion of the asynchronous calls of one
// test, so that the test can check each came exactly once (or never).
type completions struct {
	t  *testing.T
	mu sync.Mutex
	// calls is every call made through track. Guarded by mu.
	calls []*call
}

type call struct {
	name string
	ch   chan result // buffered: the first completion
	mu   sync.Mutex
	// n counts completions. Guarded by mu.
	n int
}

type result struct {
	st     int32
	msg    string
	handle uint64
	js     string
	exit   bridge.ExitInfo
}

func (cs *completions) track(name string) *call {
	c := &call{name: name, ch: make(chan result, 1)}
	cs.mu.Lock()
	cs.calls = append(cs.calls, c)
	cs.mu.Unlock()
	return c
}

func (c *call) complete(r result) {
	c.mu.Lock()
	c.n++
	first := c.n == 1
	c.mu.Unlock()
	if first {
		c.ch <- r
	}
}

func (c *call) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *call) done() bridge.Done {
	return func(st int32, msg string, h uint64, js string) {
		c.complete(result{st: st, msg: msg, handle: h, js: js})
	}
}

func (c *call) execCallbacks() bridge.ExecCallbacks {
	return bridge.ExecCallbacks{Exit: func(e bridge.ExitInfo) { c.complete(result{st: e.Status, msg: e.Message, exit: e}) }}
}

// wait returns the call's first completion.
func (c *call) wait(t *testing.T) result {
	t.Helper()
	select {
	case r := <-c.ch:
		return r
	case <-time.After(60 * time.Second):
		t.Fatalf("%s: no completion after 60s", c.name)
		return result{}
	}
}

// check runs after the runtime closed (so no call is in flight): every
// accepted call completed exactly once, every rejected one never.
func (cs *completions) check(accepted map[*call]bool) {
	cs.t.Helper()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, c := range cs.calls {
		want := 0
		if accepted[c] {
			want = 1
		}
		if n := c.count(); n != want {
			cs.t.Errorf("%s: completed %d times, want %d", c.name, n, want)
		}
	}
}

// wantCode fails unless err has the status code c and its message has sub.
func wantCode(t *testing.T, what string, err error, c errdefs.Code, sub string) {
	t.Helper()
	st, msg := bridge.Status(err)
	if st != int32(c) || !strings.Contains(msg, sub) {
		t.Errorf("%s: got %s %q, want %s containing %q", what, errdefs.Code(st), msg, c, sub)
	}
}

func wantResult(t *testing.T, what string, r result, c errdefs.Code, sub string) {
	t.Helper()
	if r.st != int32(c) || !strings.Contains(r.msg, sub) {
		t.Errorf("%s: completed with %s %q, want %s containing %q", what, errdefs.Code(r.st), r.msg, c, sub)
	}
}

// openRuntime opens a runtime in a temp home; the test closes it itself or
// the cleanup does, and the cleanup checks the handle table is back to
// where it was.
func openRuntime(t *testing.T) uint64 {
	t.Helper()
	base := bridge.LiveHandles()
	home := t.TempDir()
	rt, err := bridge.RuntimeOpen(`{"home": ` + quote(home) + `}`)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		bridge.RuntimeClose(rt) // already closed by most tests: InvalidArgument
		if n := bridge.LiveHandles(); n != base {
			t.Errorf("live handles after close: %d, want %d", n, base)
		}
	})
	return rt
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// createBox makes a sandbox box (not started) and returns its handle.
func createBox(t *testing.T, cs *completions, rt uint64, opts string) (uint64, *call) {
	t.Helper()
	c := cs.track("create " + opts)
	if err := bridge.Create(rt, opts, nil, c.done()); err != nil {
		t.Fatalf("create %s: %v", opts, err)
	}
	r := c.wait(t)
	if r.st != 0 || r.handle == 0 {
		t.Fatalf("create %s: %s %q handle %d", opts, errdefs.Code(r.st), r.msg, r.handle)
	}
	return r.handle, c
}

// startedBox makes a sandbox box and starts it; it returns its handle.
func startedBox(t *testing.T, cs *completions, rt uint64, opts string) uint64 {
	t.Helper()
	box, _ := createBox(t, cs, rt, opts)
	c := cs.track("start")
	if err := bridge.Start(box, c.done()); err != nil {
		t.Fatal(err)
	}
	if r := c.wait(t); r.st != 0 {
		t.Fatalf("start: %s %q", errdefs.Code(r.st), r.msg)
	}
	return box
}

// TestAsyncExactlyOnce: every accepted asynchronous call completes exactly
// once — when it succeeds, when the library rejects its input, when the
// runtime closes under it — and a rejected call (bad handle, bad JSON, a
// closed runtime) never completes.
func TestAsyncExactlyOnce(t *testing.T) {
	requireSandbox(t)
	rt := openRuntime(t)
	cs := &completions{t: t}
	ok := map[*call]bool{}
	accept := func(c *call, err error) *call {
		t.Helper()
		if err != nil {
			t.Fatalf("%s rejected: %v", c.name, err)
		}
		ok[c] = true
		return c
	}
	reject := func(c *call, err error, code errdefs.Code, sub string) {
		t.Helper()
		wantCode(t, c.name, err, code, sub)
	}

	box, create := createBox(t, cs, rt, `{"isolation": "sandbox"}`)
	ok[create] = true
	c := cs.track("start")
	if r := accept(c, bridge.Start(box, c.done())).wait(t); r.st != 0 {
		t.Fatalf("start: %s %q", errdefs.Code(r.st), r.msg)
	}

	// Accepted calls whose work fails: the failure is the completion.
	failing := []struct {
		name string
		call func(bridge.Done) error
		code errdefs.Code
		sub  string
	}{
		{"create bad cpus", func(d bridge.Done) error { return bridge.Create(rt, `{"isolation":"sandbox","cpus":-1}`, nil, d) }, errdefs.InvalidArgument, "cpus"},
		{"create bad name", func(d bridge.Done) error {
			return bridge.Create(rt, `{"isolation":"sandbox","name":"bad name!"}`, nil, d)
		}, errdefs.InvalidArgument, "name"},
		{"remove unknown box", func(d bridge.Done) error { return bridge.Remove(rt, "no-such-box", false, d) }, errdefs.NotFound, "no-such-box"},
		{"pull bad ref", func(d bridge.Done) error { return bridge.Pull(rt, "UPPER/Case", nil, d) }, errdefs.InvalidArgument, "UPPER/Case"},
		{"copy in missing host path", func(d bridge.Done) error { return bridge.CopyIn(box, "/no/such/host/path", "/tmp", d) }, errdefs.NotFound, "/no/such/host/path"},
		{"copy out missing box path", func(d bridge.Done) error {
			return bridge.CopyOut(box, "/no/such/box/path", filepath.Join(t.TempDir(), "x"), d)
		}, errdefs.NotFound, "/no/such/box/path"},
	}
	for _, f := range failing {
		c := cs.track(f.name)
		wantResult(t, f.name, accept(c, f.call(c.done())).wait(t), f.code, f.sub)
	}

	// Accepted calls that succeed.
	src := filepath.Join(t.TempDir(), "in.txt")
	if err := os.WriteFile(src, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	c = cs.track("copy in")
	if r := accept(c, bridge.CopyIn(box, src, "/tmp/in.txt", c.done())).wait(t); r.st != 0 || r.js != `{"bytes":5}` {
		t.Errorf("copy in: %s %q %q", errdefs.Code(r.st), r.msg, r.js)
	}
	c = cs.track("pull busybox")
	if r := accept(c, bridge.Pull(rt, "busybox", nil, c.done())).wait(t); r.st != 0 || !strings.Contains(r.js, `"ref":`) {
		t.Errorf("pull busybox: %s %q %q", errdefs.Code(r.st), r.msg, r.js)
	}

	// Execs: exactly one Exit for a normal end and for a spawn failure.
	c = cs.track("exec true")
	if _, err := bridge.Exec(box, `{"args":["true"]}`, c.execCallbacks()); err != nil {
		t.Fatal(err)
	}
	ok[c] = true
	if r := c.wait(t); r.st != 0 || r.exit.ExitCode != 0 {
		t.Errorf("exec true: %+v", r.exit)
	}
	c = cs.track("exec missing command")
	if _, err := bridge.Exec(box, `{"args":["/no/such/cmd"]}`, c.execCallbacks()); err != nil {
		t.Fatal(err)
	}
	ok[c] = true
	if r := c.wait(t); r.exit.Reason != "not_found" {
		t.Errorf("exec missing command: reason %q, want not_found", r.exit.Reason)
	} else {
		wantResult(t, "exec missing command", r, errdefs.NotFound, "/no/such/cmd")
	}

	// Rejected calls never complete.
	for _, r := range []struct {
		name string
		call func(bridge.Done) error
		code errdefs.Code
		sub  string
	}{
		{"create bad json", func(d bridge.Done) error { return bridge.Create(rt, `{"cpus":"2"}`, nil, d) }, errdefs.InvalidArgument, "box options"},
		{"start on runtime handle", func(d bridge.Done) error { return bridge.Start(rt, d) }, errdefs.InvalidArgument, "not a box handle"},
		{"stop unknown handle", func(d bridge.Done) error { return bridge.Stop(1<<62, d) }, errdefs.InvalidArgument, "unknown or released"},
		{"remove empty name", func(d bridge.Done) error { return bridge.Remove(rt, "", false, d) }, errdefs.InvalidArgument, "empty"},
		{"copy in empty path", func(d bridge.Done) error { return bridge.CopyIn(box, "", "/tmp", d) }, errdefs.InvalidArgument, "required"},
		{"pull on box handle", func(d bridge.Done) error { return bridge.Pull(box, "busybox", nil, d) }, errdefs.InvalidArgument, "not a runtime handle"},
		{"remove image on 0", func(d bridge.Done) error { return bridge.RemoveImage(0, "busybox", false, d) }, errdefs.InvalidArgument, "0 (null)"},
		{"warm on box handle", func(d bridge.Done) error { return bridge.Warm(box, "busybox", "", d) }, errdefs.InvalidArgument, "not a runtime handle"},
		{"warm bad options", func(d bridge.Done) error { return bridge.Warm(rt, "busybox", `{"memory_mib":"x"}`, d) }, errdefs.InvalidArgument, "box options"},
	} {
		c := cs.track(r.name)
		reject(c, r.call(c.done()), r.code, r.sub)
	}
	for _, name := range []string{"box_create", "box_start", "box_stop", "box_remove", "box_copy_in", "box_copy_out", "box_pull", "box_image_remove", "box_warm"} {
		var err error
		switch name {
		case "box_create":
			err = bridge.Create(rt, "", nil, nil)
		case "box_start":
			err = bridge.Start(box, nil)
		case "box_stop":
			err = bridge.Stop(box, nil)
		case "box_remove":
			err = bridge.Remove(rt, "x", false, nil)
		case "box_copy_in":
			err = bridge.CopyIn(box, "/a", "/b", nil)
		case "box_copy_out":
			err = bridge.CopyOut(box, "/a", "/b", nil)
		case "box_pull":
			err = bridge.Pull(rt, "busybox", nil, nil)
		case "box_image_remove":
			err = bridge.RemoveImage(rt, "busybox", false, nil)
		case "box_warm":
			err = bridge.Warm(rt, "busybox", "", nil)
		}
		wantCode(t, name+" without done", err, errdefs.InvalidArgument, "NULL")
	}

	// Calls in flight when the runtime closes complete before RuntimeClose
	// returns: a running exec (Canceled) and a create.
	sleeper := cs.track("exec sleep during close")
	if _, err := bridge.Exec(box, `{"args":["sleep","30"]}`, sleeper.execCallbacks()); err != nil {
		t.Fatal(err)
	}
	ok[sleeper] = true
	inflight := accept(cs.track("create during close"), nil)
	if err := bridge.Create(rt, `{"isolation":"sandbox"}`, nil, inflight.done()); err != nil {
		t.Fatal(err)
	}
	if err := bridge.RuntimeClose(rt); err != nil {
		t.Fatal(err)
	}
	if sleeper.count() != 1 || inflight.count() != 1 {
		t.Fatalf("after RuntimeClose: exec completed %d times, create %d times; want 1 and 1", sleeper.count(), inflight.count())
	}
	wantResult(t, "exec sleep during close", <-sleeper.ch, errdefs.Canceled, "")

	// A closed runtime: its handle and its boxes' handles are gone.
	c = cs.track("create on closed runtime")
	reject(c, bridge.Create(rt, "", nil, c.done()), errdefs.InvalidArgument, "unknown or released")
	c = cs.track("start on closed runtime's box")
	reject(c, bridge.Start(box, c.done()), errdefs.InvalidArgument, "unknown or released")
	c = cs.track("exec on closed runtime's box")
	_, err := bridge.Exec(box, `{"args":["true"]}`, c.execCallbacks())
	reject(c, err, errdefs.InvalidArgument, "unknown or released")

	cs.check(ok)
}

// TestHandleRules: a handle of the wrong kind, a released one, an unknown
// one and 0 each give InvalidArgument saying which; closing a runtime
// drops every handle that came from it.
func TestHandleRules(t *testing.T) {
	requireSandbox(t)
	base := bridge.LiveHandles()
	rt := openRuntime(t)
	cs := &completions{t: t}
	box := startedBox(t, cs, rt, `{"isolation": "sandbox", "name": "h1"}`)
	exit := cs.track("exec")
	ex, err := bridge.Exec(box, `{"args":["sleep","30"],"stdin":true}`, exit.execCallbacks())
	if err != nil {
		t.Fatal(err)
	}
	if n := bridge.LiveHandles(); n != base+3 {
		t.Errorf("live handles with a runtime, a box and an exec: %d, want %d", n, base+3)
	}

	const unknown = 1 << 62
	for _, r := range []struct {
		name string
		err  error
		sub  string
	}{
		{"info of runtime", func() error { _, err := bridge.Info(rt); return err }(), "is a runtime handle, not a box handle"},
		{"info of exec", func() error { _, err := bridge.Info(ex); return err }(), "is a exec handle, not a box handle"},
		{"list of box", func() error { _, err := bridge.List(box); return err }(), "is a box handle, not a runtime handle"},
		{"images of exec", func() error { _, err := bridge.Images(ex); return err }(), "is a exec handle, not a runtime handle"},
		{"exec on runtime", func() error { _, err := bridge.Exec(rt, `{"args":["true"]}`, bridge.ExecCallbacks{}); return err }(), "is a runtime handle, not a box handle"},
		{"stdin of box", bridge.WriteStdin(box, []byte("x")), "is a box handle, not a exec handle"},
		{"signal of runtime", bridge.Signal(rt, 15), "is a runtime handle, not a exec handle"},
		{"cancel of box", bridge.Cancel(box), "is a box handle, not a exec handle"},
		{"release runtime", bridge.Release(rt), "close it with box_runtime_close"},
		{"close box as runtime", bridge.RuntimeClose(box), "is a box handle, not a runtime handle"},
		{"info of 0", func() error { _, err := bridge.Info(0); return err }(), "box handle is 0 (null)"},
		{"resize of 0", bridge.Resize(0, 24, 80), "exec handle is 0 (null)"},
		{"info of unknown", func() error { _, err := bridge.Info(unknown); return err }(), "unknown or released handle"},
		{"release unknown", bridge.Release(unknown), "unknown or released handle"},
		{"close unknown", bridge.RuntimeClose(unknown), "unknown or released runtime handle"},
	} {
		wantCode(t, r.name, r.err, errdefs.InvalidArgument, r.sub)
	}
	// A refused RuntimeClose left the box handle in place.
	if _, err := bridge.Info(box); err != nil {
		t.Errorf("box handle after a refused RuntimeClose: %v", err)
	}

	// Get gives a second handle on the same box; releasing it twice fails.
	box2, err := bridge.Get(rt, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if box2 == box {
		t.Errorf("Get returned the existing handle %d", box)
	}
	if err := bridge.Release(box2); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "release twice", bridge.Release(box2), errdefs.InvalidArgument, "unknown or released handle")
	_, err = bridge.Info(box2)
	wantCode(t, "info of released", err, errdefs.InvalidArgument, "unknown or released handle")
	if _, err := bridge.Info(box); err != nil {
		t.Errorf("the first box handle after releasing the second: %v", err)
	}

	// A write after CloseStdin says stdin is closed, also once the process
	// has ended (cat ends at EOF).
	cat := cs.track("exec cat")
	catH, err := bridge.Exec(box, `{"args":["cat"],"stdin":true}`, cat.execCallbacks())
	if err != nil {
		t.Fatal(err)
	}
	if err := bridge.CloseStdin(catH); err != nil {
		t.Fatal(err)
	}
	if r := cat.wait(t); r.st != 0 || r.exit.ExitCode != 0 {
		t.Errorf("cat: %+v", r.exit)
	}
	wantCode(t, "write after close and exit", bridge.WriteStdin(catH, []byte("x")), errdefs.FailedPrecondition, "stdin is closed")
	if err := bridge.Release(catH); err != nil {
		t.Fatal(err)
	}

	// Releasing an exec handle does not end the exec; the runtime's close does.
	if err := bridge.Release(ex); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "stdin of released exec", bridge.WriteStdin(ex, []byte("x")), errdefs.InvalidArgument, "unknown or released handle")
	if n := exit.count(); n != 0 {
		t.Errorf("exec ended (%d) when its handle was released", n)
	}
	if err := bridge.RuntimeClose(rt); err != nil {
		t.Fatal(err)
	}
	if n := exit.count(); n != 1 {
		t.Errorf("exec completed %d times by RuntimeClose, want 1", n)
	}
	if n := bridge.LiveHandles(); n != base {
		t.Errorf("live handles after RuntimeClose: %d, want %d", n, base)
	}
	wantCode(t, "close twice", bridge.RuntimeClose(rt), errdefs.InvalidArgument, "unknown or released runtime handle")
}

// TestBadJSON: each malformed option bag or request is rejected with
// InvalidArgument naming what is wrong, before any work starts.
func TestBadJSON(t *testing.T) {
	requireSandbox(t)
	rt := openRuntime(t)
	cs := &completions{t: t}
	box, created := createBox(t, cs, rt, `{"isolation": "sandbox"}`) // not started: requests are checked first
	type row struct {
		name string
		call func(string) error
		json string
		sub  string
	}
	var rows []row
	runtimeOpen := func(s string) error {
		h, err := bridge.RuntimeOpen(s)
		if err == nil {
			bridge.RuntimeClose(h)
		}
		return err
	}
	create := func(s string) error {
		c := cs.track("create " + s)
		return bridge.Create(rt, s, nil, c.done())
	}
	exec := func(s string) error {
		_, err := bridge.Exec(box, s, bridge.ExecCallbacks{})
		return err
	}
	add := func(call func(string) error, what string, cases ...[3]string) {
		for _, c := range cases {
			rows = append(rows, row{what + " " + c[0], call, c[1], c[2]})
		}
	}
	add(runtimeOpen, "runtime options",
		[3]string{"unknown field", `{"homedir": "/x"}`, `runtime options: invalid JSON: json: unknown field "homedir"`},
		[3]string{"wrong type", `{"home": 1}`, "runtime options: invalid JSON: json: cannot unmarshal number"},
		[3]string{"not an object", `["/x"]`, "runtime options: invalid JSON: json: cannot unmarshal array"},
		[3]string{"truncated", `{"home": "/x"`, "runtime options: invalid JSON: unexpected EOF"},
		[3]string{"trailing data", `{} {}`, "runtime options: invalid JSON: trailing data"},
		[3]string{"bad boot timeout", `{"boot_timeout": "soon"}`, `runtime options: boot_timeout: boot timeout "soon": want a positive number of seconds`},
		[3]string{"boot timeout as bool", `{"boot_timeout": true}`, `boot timeout "true"`},
		[3]string{"bad registry auth", `{"registry_auth": "ghcr.io=nopassword"}`, `LIBBOX_REGISTRY_AUTH: entry 1 is malformed`},
	)
	add(create, "box options",
		[3]string{"unknown field", `{"img": "busybox"}`, `box options: invalid JSON: json: unknown field "img"`},
		[3]string{"cpus as string", `{"cpus": "2"}`, "box options: invalid JSON: json: cannot unmarshal string"},
		[3]string{"env as list", `{"env": ["A=1"]}`, "box options: invalid JSON: json: cannot unmarshal array"},
		[3]string{"volume unknown field", `{"volumes": [{"src": "/a"}]}`, `box options: invalid JSON: json: unknown field "src"`},
		[3]string{"not JSON", `isolation=sandbox`, "box options: invalid JSON: invalid character"},
		[3]string{"trailing data", `{}x`, "box options: invalid JSON: trailing data"},
		[3]string{"env key with =", `{"env": {"A=B": "1"}}`, `env key "A=B": must be non-empty without '=' or NUL`},
		[3]string{"empty env key", `{"env": {"": "1"}}`, `env key "": must be non-empty without '=' or NUL`},
	)
	add(exec, "exec request",
		[3]string{"empty", ``, "exec request is empty"},
		[3]string{"blank", " \n", "exec request is empty"},
		[3]string{"null", `null`, "exec request: args must name a command"},
		[3]string{"no args", `{}`, "exec request: args must name a command"},
		[3]string{"empty args", `{"args": []}`, "exec request: args must name a command"},
		[3]string{"empty command", `{"args": [""]}`, "exec request: args must name a command"},
		[3]string{"args as string", `{"args": "ls"}`, "exec request: invalid JSON: json: cannot unmarshal string"},
		[3]string{"unknown field", `{"args": ["ls"], "timeout": 5}`, `exec request: invalid JSON: json: unknown field "timeout"`},
		[3]string{"negative timeout", `{"args": ["ls"], "timeout_ms": -1}`, "exec request: timeout_ms -1 is negative"},
		[3]string{"rows negative", `{"args": ["ls"], "rows": -1}`, "exec request: invalid JSON: json: cannot unmarshal number -1"},
		[3]string{"env key with NUL", `{"args": ["ls"], "env": {"A\u0000": "1"}}`, `env key "A\x00": must be non-empty without '=' or NUL`},
	)
	for _, r := range rows {
		wantCode(t, r.name, r.call(r.json), errdefs.InvalidArgument, r.sub)
	}
	// The same exec request, well formed, gets past the checks to the box's state.
	wantCode(t, "good request on a stopped box", exec(`{"args": ["ls"]}`), errdefs.FailedPrecondition, "is not running")
	if err := bridge.RuntimeClose(rt); err != nil {
		t.Fatal(err)
	}
	cs.check(map[*call]bool{created: true}) // every create of the rows was rejected: none completed
}

// TestControlBeforeSpawnIsOrdered: a resize made before the spawn finished
// reaches the terminal before a stdin write made after it, as it does once
// the process runs (the Node binding's spawn resizes, then writes, at once).
func TestControlBeforeSpawnIsOrdered(t *testing.T) {
	requireSandbox(t)
	rt := openRuntime(t)
	cs := &completions{t: t}
	box := startedBox(t, cs, rt, `{"isolation": "sandbox", "name": "order"}`)
	const n = 16 // at once: the spawns take long enough that control queues
	type run struct {
		exit *call
		h    uint64
		mu   sync.Mutex
		out  []byte
	}
	runs := make([]*run, n)
	for i := range runs {
		r := &run{exit: cs.track("exec")}
		cbs := r.exit.execCallbacks()
		cbs.Stdout = func(b []byte) {
			r.mu.Lock()
			r.out = append(r.out, b...)
			r.mu.Unlock()
		}
		h, err := bridge.Exec(box, `{"args":["sh","-c","read x; stty size"],"tty":true,"stdin":true,"rows":10,"cols":20}`, cbs)
		if err != nil {
			t.Fatal(err)
		}
		r.h = h
		if err := bridge.Resize(h, 40, 120); err != nil {
			t.Fatal(err)
		}
		runs[i] = r
	}
	var wg sync.WaitGroup
	for _, r := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := bridge.WriteStdin(r.h, []byte("go\n")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for i, r := range runs {
		if e := r.exit.wait(t); e.st != 0 || e.exit.ExitCode != 0 {
			t.Errorf("exec %d: %+v", i, e.exit)
		}
		r.mu.Lock()
		if got := string(r.out); got != "go\r\n40 120\r\n" {
			t.Errorf("exec %d printed %q, want the size set before the write", i, got)
		}
		r.mu.Unlock()
		if err := bridge.Release(r.h); err != nil {
			t.Error(err)
		}
	}
	if err := bridge.RuntimeClose(rt); err != nil {
		t.Fatal(err)
	}
}
