// Command box is the libbox command-line tool: create, run and manage boxes
// from a shell, sharing LIBBOX_HOME with the library (a box made from
// Python shows up in `box ls`, and the other way round).
//
// Exit status: the process's own exit code for run/exec (128+signal when
// it was killed, 126 when the command cannot run, 127 when it is missing),
// 125 when libbox itself fails, like `docker run`.
//
// It must never keep state of its own or reach around package libbox:
// everything it shows or changes lives in LIBBOX_HOME, so it can never
// disagree with the library about what boxes exist.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox"
	"github.com/libbox/libbox/libbox/image"
)

// exitError carries an exit status out of a command.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

const usage = `usage: box COMMAND [ARGS]

  run [--rm] [--name N] [--isolation vm|sandbox] [--cpus N] [--memory MiB] [-e K=V] [-w DIR]
      [-u USER] [-v HOST:BOX[:ro]] [--network] [-i] [-t] [-d] IMAGE [CMD...]
                                       --isolation: vm (default, a micro-VM) or sandbox
                                       (Linux namespaces, as root; no VM needed)
  create [--name --isolation --cpus --memory -e -w -v --network] IMAGE
                                       create a box, not started (prints its id)
  start BOX...  stop BOX...  rm [-f] BOX...
  exec [-i] [-t] [-e K=V] [-w DIR] [-u USER] BOX CMD...
  ls [-a] [--json]                     boxes (running ones, or all with -a)
  cp SRC DST                           copy; either side may be BOX:PATH
  inspect BOX                          box details as JSON
  pull IMAGE  images  rmi [-f] IMAGE   images
  version

Boxes and images live in $LIBBOX_HOME (default ~/.local/share/libbox), shared
with the libbox library. run and exec exit with the command's status
(128+signal if killed, 126 not executable, 127 not found); 125 when box fails.
`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(os.Stderr, usage)
		if len(args) == 0 {
			return 125
		}
		return 0
	}
	cmds := map[string]func(*cli, []string) error{
		"run": (*cli).run, "create": (*cli).create, "start": (*cli).start, "stop": (*cli).stop,
		"rm": (*cli).rm, "exec": (*cli).exec, "ls": (*cli).ls, "ps": (*cli).ls, "cp": (*cli).cp,
		"inspect": (*cli).inspect, "pull": (*cli).pull, "images": (*cli).images, "rmi": (*cli).rmi,
		"version": (*cli).version,
	}
	fn, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "box: unknown command %q (see box --help)\n", args[0])
		return 125
	}
	c := &cli{stdout: os.Stdout, stderr: os.Stderr}
	err := fn(c, args[1:])
	if c.rt != nil {
		c.rt.Close()
	}
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, flag.ErrHelp):
		return 0
	}
	fmt.Fprintf(os.Stderr, "box: %s\n", oneLine(err.Error()))
	return 125
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

type cli struct {
	rt     *libbox.Runtime
	stdout io.Writer
	stderr io.Writer
}

func (c *cli) runtime() (*libbox.Runtime, error) {
	if c.rt == nil {
		rt, err := libbox.Open(libbox.Options{Logf: func(f string, a ...any) { fmt.Fprintf(c.stderr, "box: "+f+"\n", a...) }})
		if err != nil {
			return nil, err
		}
		c.rt = rt
	}
	return c.rt, nil
}

func usageErr(format string, args ...any) error {
	return errdefs.New(errdefs.InvalidArgument, format, args...)
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(splitShortFlags(fs, args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(os.Stderr, usage)
			return err
		}
		return usageErr("%s: %v", fs.Name(), err)
	}
	return nil
}

// splitShortFlags turns `-it` into `-i -t` (when each letter is a boolean
// flag), as users of other container CLIs type it. It stops at the first
// argument that is not a flag, so the box command's own flags are untouched.
func splitShortFlags(fs *flag.FlagSet, args []string) []string {
	isBool := func(name string) bool {
		f := fs.Lookup(name)
		if f == nil {
			return false
		}
		b, ok := f.Value.(interface{ IsBoolFlag() bool })
		return ok && b.IsBoolFlag()
	}
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || len(a) < 2 || a[0] != '-' {
			return append(out, args[i:]...)
		}
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			out = append(out, a)
			continue
		}
		if fs.Lookup(name) != nil {
			out = append(out, a)
			if !isBool(name) && i+1 < len(args) {
				i++
				out = append(out, args[i])
			}
			continue
		}
		split := a[1] != '-' && len(name) > 1
		for _, r := range name {
			split = split && isBool(string(r))
		}
		if !split {
			out = append(out, a) // let flag report it
			continue
		}
		for _, r := range name {
			out = append(out, "-"+string(r))
		}
	}
	return out
}

// boxFlags are the flags of run and create.
type boxFlags struct {
	rm, interactive, tty, detach bool
	network                      bool
	name, isolation, workdir     string
	user                         string
	cpus, memory                 int
	env, volumes                 multi
}

func (f *boxFlags) register(fs *flag.FlagSet, forRun bool) {
	fs.StringVar(&f.name, "name", "", "box name")
	fs.StringVar(&f.isolation, "isolation", libbox.IsolationVM, "vm or sandbox")
	fs.IntVar(&f.cpus, "cpus", 0, "CPUs")
	fs.IntVar(&f.memory, "memory", 0, "memory in MiB")
	fs.Var(&f.env, "e", "KEY=VALUE (repeatable)")
	fs.StringVar(&f.workdir, "w", "", "working directory")
	fs.Var(&f.volumes, "v", "HOST:BOX[:ro] (repeatable)")
	fs.BoolVar(&f.network, "network", false, "give the box network access")
	if forRun {
		fs.BoolVar(&f.rm, "rm", false, "remove the box when the command ends")
		fs.BoolVar(&f.interactive, "i", false, "forward stdin")
		fs.BoolVar(&f.tty, "t", false, "allocate a terminal")
		fs.BoolVar(&f.detach, "d", false, "start the box and leave it running in the background")
		fs.StringVar(&f.user, "u", "", "user (name, uid or uid:gid)")
	}
}

func (f *boxFlags) options(img string) (libbox.BoxOptions, error) {
	o := libbox.BoxOptions{
		Image: img, Name: f.name, Isolation: f.isolation, CPUs: f.cpus, MemoryMiB: f.memory,
		Env: f.env, WorkingDir: f.workdir, AutoRemove: f.rm, Detach: !f.rm, Network: f.network,
	}
	for _, v := range f.volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 || (len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw") {
			return o, usageErr("volume %q: want HOST:BOX[:ro]", v)
		}
		o.Volumes = append(o.Volumes, libbox.Volume{HostPath: parts[0], BoxPath: parts[1], ReadOnly: len(parts) == 3 && parts[2] == "ro"})
	}
	return o, nil
}

func (c *cli) createBox(ctx context.Context, f *boxFlags, img string) (*libbox.Box, error) {
	rt, err := c.runtime()
	if err != nil {
		return nil, err
	}
	o, err := f.options(img)
	if err != nil {
		return nil, err
	}
	bar := newProgress(c.stderr)
	o.Progress = bar.update
	b, err := rt.Create(ctx, o)
	bar.done()
	return b, err
}

func (c *cli) create(args []string) error {
	fs := newFlags("create")
	var f boxFlags
	f.register(fs, false)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErr("create: want exactly one IMAGE")
	}
	b, err := c.createBox(context.Background(), &f, fs.Arg(0))
	if err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, b.ID())
	return nil
}

func (c *cli) run(args []string) error {
	fs := newFlags("run")
	var f boxFlags
	f.register(fs, true)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 {
		return usageErr("run: want IMAGE [CMD...]")
	}
	if f.rm && f.detach {
		return usageErr("run: --rm and -d cannot be combined")
	}
	sigs := catchSignals()
	defer sigs.release()
	b, err := c.createBox(sigs.ctx, &f, fs.Arg(0))
	if err == nil {
		err = b.Start(sigs.ctx)
		if err != nil && f.rm {
			c.rt.Remove(context.Background(), b.ID(), true)
		}
	}
	if s := sigs.handOff(); s != 0 {
		if err == nil && f.rm {
			c.rt.Remove(context.Background(), b.ID(), true)
		}
		fmt.Fprintf(c.stderr, "box: interrupted by %s while starting the box\n", unix.SignalName(s))
		return exitError{128 + int(s)}
	}
	if err != nil {
		return err
	}
	if f.detach {
		fmt.Fprintln(c.stdout, b.ID())
		return nil
	}
	cmd := fs.Args()[1:]
	if len(cmd) == 0 {
		cmd = []string{"sh"}
	}
	err = c.execIn(context.Background(), b, cmd, execFlags{interactive: f.interactive, tty: f.tty, user: f.user}, sigs.ch)
	if f.rm {
		if rerr := c.rt.Remove(context.Background(), b.ID(), true); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}

// forwarded are the signals run and exec pass on to the process in the box
// (SIGWINCH becomes a terminal resize).
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGWINCH}

// signalWatch catches the forwarded signals from before the box exists, so
// that an early Ctrl-C cancels the start (and --rm still cleans up) instead
// of killing the CLI halfway.
type signalWatch struct {
	ch     chan os.Signal
	ctx    context.Context // cancelled by the first non-resize signal before handOff
	cancel context.CancelFunc
	stop   chan struct{}
	done   chan struct{}
	got    syscall.Signal // written by the watcher goroutine; read after done
}

func catchSignals() *signalWatch {
	w := &signalWatch{ch: make(chan os.Signal, 8), stop: make(chan struct{}), done: make(chan struct{})}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	signal.Notify(w.ch, forwarded...)
	go func() {
		defer close(w.done)
		for {
			select {
			case s := <-w.ch:
				if s != syscall.SIGWINCH && w.got == 0 {
					w.got = s.(syscall.Signal)
					w.cancel()
				}
			case <-w.stop:
				return
			}
		}
	}()
	return w
}

// handOff stops the watcher (signals now queue on ch for execIn) and
// reports the signal that interrupted the start, or 0.
func (w *signalWatch) handOff() syscall.Signal {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.cancel()
	return w.got
}

func (w *signalWatch) release() {
	w.handOff()
	signal.Stop(w.ch)
}

type execFlags struct {
	interactive, tty bool
	user, workdir    string
	env              multi
}

// execIn runs cmd in b with the terminal's stdio and returns its status.
func (c *cli) execIn(ctx context.Context, b *libbox.Box, args []string, f execFlags, sigs <-chan os.Signal) error {
	cmd := libbox.Command{Args: args, Env: f.env, Dir: f.workdir, User: f.user, TTY: f.tty, Stdout: c.stdout, Stderr: c.stderr}
	if f.interactive {
		cmd.Stdin = os.Stdin
	}
	in := int(os.Stdin.Fd())
	if f.tty {
		if term.IsTerminal(in) {
			if w, h, err := term.GetSize(in); err == nil {
				cmd.Cols, cmd.Rows = uint32(w), uint32(h)
			}
			if f.interactive {
				old, err := term.MakeRaw(in)
				if err == nil {
					defer term.Restore(in, old)
				}
			}
		}
	}
	p, err := b.Exec(ctx, cmd)
	if err != nil {
		// The agent names the command (`command "x" ...`) when it is the
		// command that cannot run; other failures are libbox's own (125).
		aboutCmd := strings.Contains(err.Error(), `command "`)
		switch {
		case errdefs.IsNotFound(err) && aboutCmd:
			fmt.Fprintf(c.stderr, "box: %s\n", oneLine(err.Error()))
			return exitError{127}
		case errdefs.IsInvalidArgument(err) && aboutCmd:
			fmt.Fprintf(c.stderr, "box: %s\n", oneLine(err.Error()))
			return exitError{126}
		}
		return err
	}
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGWINCH {
				if w, h, err := term.GetSize(in); err == nil && f.tty {
					_ = p.Resize(uint32(h), uint32(w))
				}
				continue
			}
			_ = p.Signal(s.(syscall.Signal))
		case <-p.Done():
			st, err := p.Wait(ctx)
			if err != nil {
				if errdefs.IsDeadlineExceeded(err) || errdefs.IsCanceled(err) {
					fmt.Fprintf(c.stderr, "box: %s\n", oneLine(err.Error()))
				} else {
					return err
				}
			}
			if st.Signal > 0 {
				return exitError{128 + st.Signal}
			}
			if st.ExitCode != 0 {
				return exitError{st.ExitCode}
			}
			return nil
		}
	}
}

// box finds a box by id or name.
func (c *cli) box(ctx context.Context, name string) (*libbox.Box, error) {
	rt, err := c.runtime()
	if err != nil {
		return nil, err
	}
	return rt.Get(ctx, name)
}

func (c *cli) exec(args []string) error {
	fs := newFlags("exec")
	var f execFlags
	fs.BoolVar(&f.interactive, "i", false, "forward stdin")
	fs.BoolVar(&f.tty, "t", false, "allocate a terminal")
	fs.Var(&f.env, "e", "KEY=VALUE (repeatable)")
	fs.StringVar(&f.workdir, "w", "", "working directory")
	fs.StringVar(&f.user, "u", "", "user")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 2 {
		return usageErr("exec: want BOX CMD...")
	}
	sigs := catchSignals()
	defer sigs.release()
	b, err := c.box(sigs.ctx, fs.Arg(0))
	if err == nil {
		if st := b.Info().State; st != libbox.StateRunning {
			err = errdefs.New(errdefs.FailedPrecondition, "box %s is %s: start it with `box start %s`", fs.Arg(0), st, fs.Arg(0))
		} else {
			err = b.Start(sigs.ctx) // attaches to the running box
		}
	}
	if s := sigs.handOff(); s != 0 {
		fmt.Fprintf(c.stderr, "box: interrupted by %s while attaching to the box\n", unix.SignalName(s))
		return exitError{128 + int(s)}
	}
	if err != nil {
		return err
	}
	return c.execIn(context.Background(), b, fs.Args()[1:], f, sigs.ch)
}

func (c *cli) eachBox(args []string, what string, fn func(context.Context, *libbox.Box) error) error {
	if len(args) == 0 {
		return usageErr("%s: want at least one BOX", what)
	}
	ctx := context.Background()
	var first error
	for _, name := range args {
		b, err := c.box(ctx, name)
		if err == nil {
			err = fn(ctx, b)
		}
		if err != nil {
			fmt.Fprintf(c.stderr, "box: %s %s: %s\n", what, name, oneLine(err.Error()))
			if first == nil {
				first = exitError{125}
			}
			continue
		}
		fmt.Fprintln(c.stdout, name)
	}
	return first
}

func (c *cli) start(args []string) error {
	return c.eachBox(args, "start", func(ctx context.Context, b *libbox.Box) error { return b.Start(ctx) })
}

func (c *cli) stop(args []string) error {
	return c.eachBox(args, "stop", func(ctx context.Context, b *libbox.Box) error { return b.Stop(ctx) })
}

func (c *cli) rm(args []string) error {
	fs := newFlags("rm")
	force := fs.Bool("f", false, "stop running boxes first")
	if err := parse(fs, args); err != nil {
		return err
	}
	return c.eachBox(fs.Args(), "rm", func(ctx context.Context, b *libbox.Box) error {
		return c.rt.Remove(ctx, b.ID(), *force)
	})
}

func (c *cli) ls(args []string) error {
	fs := newFlags("ls")
	all := fs.Bool("a", false, "all boxes, not only running ones")
	asJSON := fs.Bool("json", false, "JSON output")
	if err := parse(fs, args); err != nil {
		return err
	}
	rt, err := c.runtime()
	if err != nil {
		return err
	}
	list, err := rt.List(context.Background())
	if err != nil {
		return err
	}
	shown := []libbox.BoxInfo{} // never null in --json
	for _, b := range list {
		if *all || b.State == libbox.StateRunning {
			shown = append(shown, b)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(shown)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tIMAGE\tISOLATION\tSTATE\tCREATED")
	for _, b := range shown {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", b.ID[:12], b.Name, b.Image, b.Isolation, b.State, ago(b.CreatedAt))
	}
	return tw.Flush()
}

func ago(t time.Time) string {
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func (c *cli) inspect(args []string) error {
	if len(args) != 1 {
		return usageErr("inspect: want exactly one BOX")
	}
	b, err := c.box(context.Background(), args[0])
	if err != nil {
		return err
	}
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(b.Info())
}

func splitBoxPath(s string) (box, path string, ok bool) {
	i := strings.IndexByte(s, ':')
	if i <= 0 || strings.ContainsRune(s[:i], '/') {
		return "", s, false
	}
	return s[:i], s[i+1:], true
}

func (c *cli) cp(args []string) error {
	if len(args) != 2 {
		return usageErr("cp: want SRC DST (one of them BOX:PATH)")
	}
	sb, sp, sok := splitBoxPath(args[0])
	db, dp, dok := splitBoxPath(args[1])
	if sok == dok {
		return usageErr("cp: exactly one of SRC and DST must be BOX:PATH")
	}
	ctx := context.Background()
	name := sb
	if dok {
		name = db
	}
	b, err := c.box(ctx, name)
	if err != nil {
		return err
	}
	if st := b.Info().State; st != libbox.StateRunning {
		return errdefs.New(errdefs.FailedPrecondition, "box %s is %s: start it with `box start %s`", name, st, name)
	}
	if err := b.Start(ctx); err != nil {
		return err
	}
	if dok {
		_, err = b.CopyIn(ctx, sp, dp)
	} else {
		_, err = b.CopyOut(ctx, sp, dp)
	}
	return err
}

func (c *cli) pull(args []string) error {
	if len(args) != 1 {
		return usageErr("pull: want exactly one IMAGE")
	}
	rt, err := c.runtime()
	if err != nil {
		return err
	}
	bar := newProgress(c.stdout)
	img, err := rt.PullImage(context.Background(), args[0], bar.update)
	bar.done()
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%s %s\n", img.Ref, img.ID)
	return nil
}

func (c *cli) images(args []string) error {
	rt, err := c.runtime()
	if err != nil {
		return err
	}
	imgs, err := rt.Images(context.Background())
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REF\tID\tSIZE\tCREATED")
	for _, img := range imgs {
		fmt.Fprintf(tw, "%s\t%s\t%.1f MB\t%s\n", img.Ref, short(img.ID), float64(img.Size)/1e6, ago(img.Created))
	}
	return tw.Flush()
}

func (c *cli) rmi(args []string) error {
	fs := newFlags("rmi")
	force := fs.Bool("f", false, "remove even if a box uses it")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageErr("rmi: want at least one IMAGE")
	}
	rt, err := c.runtime()
	if err != nil {
		return err
	}
	for _, ref := range fs.Args() {
		if err := rt.RemoveImage(context.Background(), ref, *force); err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, ref)
	}
	return nil
}

func (c *cli) version(args []string) error {
	fmt.Fprintf(c.stdout, "box %s\n", libbox.Version)
	return nil
}

// progress renders pull progress: on a terminal one bar for the whole
// image, redrawn in place; otherwise a plain line per layer update.
type progress struct {
	w   io.Writer
	tty bool

	// mu guards the fields below: the image store reports layers from
	// several goroutines at once.
	mu     sync.Mutex
	layers map[string]image.Progress
	order  []string
	last   time.Time
	shown  bool
}

func newProgress(w io.Writer) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, tty: ok && term.IsTerminal(int(f.Fd())), layers: map[string]image.Progress{}}
}

func (p *progress) update(ev image.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, seen := p.layers[ev.Layer]; !seen {
		p.order = append(p.order, ev.Layer)
	}
	p.layers[ev.Layer] = ev
	now := time.Now()
	if ev.Total > 0 && ev.Done > 0 && ev.Done < ev.Total && now.Sub(p.last) < 200*time.Millisecond {
		return
	}
	p.last = now
	if !p.tty {
		fmt.Fprintf(p.w, "pull %s %d/%d bytes\n", short(ev.Layer), ev.Done, ev.Total)
		return
	}
	var done, total int64
	complete := 0
	for _, l := range p.order {
		ev := p.layers[l]
		done += ev.Done
		if ev.Total > 0 {
			total += ev.Total
		}
		if ev.Total >= 0 && ev.Done >= ev.Total {
			complete++
		}
	}
	const width = 30
	fill := 0
	if total > 0 {
		fill = min(width, int(float64(width)*float64(done)/float64(total)))
	}
	fmt.Fprintf(p.w, "\rlayers %d/%d [%s%s] %6.1f/%6.1f MB", complete, len(p.order),
		strings.Repeat("=", fill), strings.Repeat(" ", width-fill), float64(done)/1e6, float64(total)/1e6)
	p.shown = true
}

// done ends the bar's line; call it after the pull returned.
func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprintln(p.w)
	}
}

func short(digest string) string {
	digest = strings.TrimPrefix(digest, "sha256:")
	if len(digest) > 12 {
		digest = digest[:12]
	}
	return digest
}
