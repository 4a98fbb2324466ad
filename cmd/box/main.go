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
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/libbox/libbox/libbox"
)

// exitError carries an exit status out of a command.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

const usage = `usage: box COMMAND [ARGS]

  run [--rm] [--name N] [--isolation vm|sandbox] [--cpus N] [--memory MiB] [-e K=V] [-w DIR]
      [-u USER] [-v HOST:BOX[:ro]] [--network] [--platform OS/ARCH] [--entrypoint CMD]
      [-i] [-t] [-d] IMAGE [ARG...]    runs the image's Entrypoint + ARGs (or + its Cmd),
                                       as docker run does
                                       --isolation: vm (default, a micro-VM) or sandbox
                                       (Linux namespaces, as root; no VM needed)
  create [--name --isolation --cpus --memory -e -w -v --network --platform] IMAGE
                                       create a box, not started (prints its id)
  start BOX...  stop BOX...  rm [-f] BOX...
  exec [-i] [-t] [-e K=V] [-w DIR] [-u USER] BOX CMD...
  ls [-a] [--json]                     boxes (running ones, or all with -a)
  ps BOX  kill [-s SIG] BOX PID        a box's running execs; signal one by pid
  stats [--json] [--no-stream] BOX     resource use, refreshed every second
  fs ls|cat|write|rm|mkdir|mv|stat|watch BOX PATH
                                       the box's files (box fs --help)
  cp SRC DST                           copy (docker cp rules); either side may be BOX:PATH
  snapshot create BOX NAME  snapshot ls [--json]  snapshot rm [-f] NAME...
                                       freeze a box's file system (also while it runs)
  run|create --from SNAPSHOT|BOX ...   a clone: a new box on the source's file system
                                       (no IMAGE operand; nothing is copied)
  restore BOX SNAPSHOT                 roll a stopped box back to a snapshot
  export BOX DIR                       the box's file system as an OCI image layout
                                       (run it again as oci-layout:DIR)
  inspect BOX                          box details as JSON
  pull [--platform OS/ARCH] IMAGE  images  rmi [-f] IMAGE...
                                       IMAGE: a reference, or an ID (prefix) from images
  image prune                          delete images no name refers to (a moved tag, rmi -f)
                                       once no box uses them, unused layers, partial pulls
  warm [--cpus N] [--memory MiB] [--platform OS/ARCH] IMAGE
                                       build the VM template of IMAGE: VM boxes of it start
                                       by restoring a booted machine (LIBBOX_VM_TEMPLATES=0: off)
  doctor [--json]                      what this host lacks to run boxes, and how to fix it
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
		"image":   (*cli).image,
		"version": (*cli).version, "doctor": (*cli).doctor,
		"fs": (*cli).fs, "stats": (*cli).stats, "kill": (*cli).kill,
		"warm":     (*cli).warm,
		"snapshot": (*cli).snapshot, "restore": (*cli).restore, "export": (*cli).export,
	}
	cmds["ps"] = (*cli).ps
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

// box finds a box by id or name.
func (c *cli) box(ctx context.Context, name string) (*libbox.Box, error) {
	rt, err := c.runtime()
	if err != nil {
		return nil, err
	}
	return rt.Get(ctx, name)
}
