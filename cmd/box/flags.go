package main

// Common flag helpers: every subcommand parses its own flags with these.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/libbox/libbox/errdefs"
)

func usageErr(format string, args ...any) error {
	return errdefs.New(errdefs.InvalidArgument, format, args...)
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// newFlags makes the flag set of one subcommand; synopsis is what follows
// `box NAME [OPTIONS]` in its help ("BOX...", "IMAGE [CMD...]").
func newFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse reports errors itself, on one line
	fs.Usage = func() {
		w := fs.Output()
		opts := ""
		fs.VisitAll(func(*flag.Flag) { opts = " [OPTIONS]" })
		fmt.Fprintln(w, strings.TrimSpace("usage: box "+name+opts+" "+synopsis))
		if opts != "" {
			fmt.Fprintln(w, "\noptions:")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parse parses a subcommand's flags: -h/--help prints its help and returns
// flag.ErrHelp (exit 0), a bad flag is InvalidArgument.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(splitShortFlags(fs, args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stderr)
			fs.Usage()
			return err
		}
		return usageErr("%s: %v", fs.Name(), err)
	}
	return nil
}

// parseArgs is parse, then a check that the subcommand got between min and
// max operands (max < 0: no limit); want says what it takes, for the error.
func parseArgs(fs *flag.FlagSet, args []string, min, max int, want string) error {
	if err := parse(fs, args); err != nil {
		return err
	}
	if n := fs.NArg(); n < min || (max >= 0 && n > max) {
		return usageErr("%s: %s", fs.Name(), want)
	}
	return nil
}

// checkNames refuses box names and image references that start with '-':
// such an operand is a mistyped or misplaced flag, never a name.
func checkNames(cmd string, names ...string) error {
	for _, n := range names {
		if strings.HasPrefix(n, "-") {
			return usageErr("%s: %q is not a valid name: names cannot start with '-' (flags go before them)", cmd, n)
		}
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
