package main

// run, create, start, stop and rm: making boxes and changing their state.

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/libbox"
)

// boxFlags are the flags of run and create.
type boxFlags struct {
	rm, interactive, tty, detach bool
	network                      bool
	name, isolation, workdir     string
	user, platform, entrypoint   string
	cpus, memory                 int
	env, volumes                 multi
	allowNet, denyNet, publish   multi
	addHost, dns                 multi
	from                         string
}

func (f *boxFlags) register(fs *flag.FlagSet, forRun bool) {
	fs.StringVar(&f.name, "name", "", "box name")
	fs.StringVar(&f.isolation, "isolation", libbox.IsolationVM, "vm or sandbox")
	fs.IntVar(&f.cpus, "cpus", 0, "CPUs")
	fs.IntVar(&f.memory, "memory", 0, "memory in MiB")
	fs.Var(&f.env, "e", "KEY=VALUE (repeatable)")
	fs.StringVar(&f.workdir, "w", "", "working directory")
	fs.Var(&f.volumes, "v", "HOST:BOX[:ro] (repeatable)")
	fs.BoolVar(&f.network, "network", false, "give the box network access (the public internet unless --allow-net)")
	fs.Var(&f.allowNet, "allow-net", "with --network: allow only NAME, *.SUFFIX, IP, CIDR or host, each with :PORT (repeatable)")
	fs.Var(&f.denyNet, "deny-net", "with --network: deny NAME, *.SUFFIX, IP or CIDR[:PORT] (repeatable, wins over --allow-net)")
	fs.Var(&f.publish, "p", "with --network: publish [IP:]HOSTPORT:BOXPORT[/udp] or BOXPORT (repeatable; host port 0 picks one)")
	fs.Var(&f.addHost, "add-host", "with --network: NAME:IP answered by the box's DNS (repeatable)")
	fs.Var(&f.dns, "dns", "with --network: upstream DNS server (repeatable; default: the host's)")
	fs.StringVar(&f.platform, "platform", "", "os/arch[/variant] of a multi-arch image (default: the host's)")
	fs.StringVar(&f.from, "from", "", "clone this snapshot or box (then no IMAGE operand)")
	if forRun {
		fs.StringVar(&f.entrypoint, "entrypoint", "", "run this instead of the image's Entrypoint (and Cmd)")
		fs.BoolVar(&f.rm, "rm", false, "remove the box when the command ends")
		fs.BoolVar(&f.interactive, "i", false, "forward stdin")
		fs.BoolVar(&f.tty, "t", false, "allocate a terminal")
		fs.BoolVar(&f.detach, "d", false, "start the box and leave it running in the background")
		fs.StringVar(&f.user, "u", "", "user (name, uid or uid:gid)")
	}
}

func (f *boxFlags) options(img string) (libbox.BoxOptions, error) {
	o := libbox.BoxOptions{
		Image: img, Platform: f.platform, Name: f.name, Isolation: f.isolation, CPUs: f.cpus, MemoryMiB: f.memory,
		Env: f.env, WorkingDir: f.workdir, AutoRemove: f.rm, Detach: !f.rm, Network: libbox.Network{Enabled: f.network}, From: f.from,
	}
	if err := f.networkOptions(&o.Network); err != nil {
		return o, err
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
	fs := newFlags("create", "IMAGE")
	var f boxFlags
	f.register(fs, false)
	if err := parse(fs, args); err != nil {
		return err
	}
	img, _, err := f.imageOperand(fs, "create")
	if err != nil {
		return err
	}
	if fs.NArg() > 1 || (f.from != "" && fs.NArg() > 0) {
		return usageErr("create: want exactly one IMAGE, or --from and none")
	}
	b, err := c.createBox(context.Background(), &f, img)
	if err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, b.ID())
	return nil
}

func (c *cli) run(args []string) error {
	fs := newFlags("run", "IMAGE [CMD...]")
	var f boxFlags
	f.register(fs, true)
	if err := parse(fs, args); err != nil {
		return err
	}
	img, cmd, err := f.imageOperand(fs, "run")
	if err != nil {
		return err
	}
	if f.rm && f.detach {
		return usageErr("run: --rm and -d cannot be combined")
	}
	sigs := catchSignals()
	defer sigs.release()
	b, err := c.createBox(sigs.ctx, &f, img)
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
	// As docker run: the image's Entrypoint followed by CMD..., or by the
	// image's Cmd when none is given; --entrypoint replaces both.
	ef := execFlags{interactive: f.interactive, tty: f.tty, user: f.user, imageCmd: true}
	if f.entrypoint != "" {
		cmd, ef.imageCmd = append([]string{f.entrypoint}, cmd...), false
	}
	err = c.execIn(context.Background(), b, cmd, ef, sigs.ch)
	// As docker run: the box ends with its command. Without --rm it is
	// kept, stopped (`box start` runs it again, `box rm` removes it).
	var rerr error
	if f.rm {
		rerr = c.rt.Remove(context.Background(), b.ID(), true)
	} else {
		rerr = b.Stop(context.Background())
	}
	if rerr != nil && err == nil {
		err = rerr
	}
	return err
}

func (c *cli) eachBox(args []string, what string, fn func(context.Context, *libbox.Box) error) error {
	if len(args) == 0 {
		return usageErr("%s: want at least one BOX", what)
	}
	if err := checkNames(what, args...); err != nil {
		return err
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
	fs := newFlags("start", "BOX...")
	if err := parse(fs, args); err != nil {
		return err
	}
	return c.eachBox(fs.Args(), "start", func(ctx context.Context, b *libbox.Box) error { return b.Start(ctx) })
}

func (c *cli) stop(args []string) error {
	fs := newFlags("stop", "BOX...")
	if err := parse(fs, args); err != nil {
		return err
	}
	return c.eachBox(fs.Args(), "stop", func(ctx context.Context, b *libbox.Box) error { return b.Stop(ctx) })
}

func (c *cli) rm(args []string) error {
	fs := newFlags("rm", "BOX...")
	force := fs.Bool("f", false, "stop running boxes first")
	if err := parse(fs, args); err != nil {
		return err
	}
	return c.eachBox(fs.Args(), "rm", func(ctx context.Context, b *libbox.Box) error {
		return c.rt.Remove(ctx, b.ID(), *force)
	})
}

// imageOperand splits the operands of run and create: IMAGE [CMD...], or
// with --from only CMD... (a clone takes its image and, unless
// --isolation is given, its isolation from its source).
func (f *boxFlags) imageOperand(fs *flag.FlagSet, cmd string) (img string, rest []string, err error) {
	if f.from != "" {
		isoSet := false
		fs.Visit(func(fl *flag.Flag) { isoSet = isoSet || fl.Name == "isolation" })
		if !isoSet {
			f.isolation = ""
		}
		return "", fs.Args(), checkNames(cmd, f.from)
	}
	if fs.NArg() < 1 {
		return "", nil, usageErr("%s: want IMAGE [CMD...] (or --from SNAPSHOT)", cmd)
	}
	return fs.Arg(0), fs.Args()[1:], checkNames(cmd, fs.Arg(0))
}
