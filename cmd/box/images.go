package main

// pull, images and rmi, and the pull progress display.

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/libbox/libbox/libbox"
	"github.com/libbox/libbox/libbox/image"
)

// imageArg parses a command whose one argument is an IMAGE (fs.Arg(0))
// and opens the runtime.
func (c *cli) imageArg(fs *flag.FlagSet, args []string) (*libbox.Runtime, error) {
	if err := parseArgs(fs, args, 1, 1, "want exactly one IMAGE"); err != nil {
		return nil, err
	}
	if err := checkNames(fs.Name(), fs.Arg(0)); err != nil {
		return nil, err
	}
	return c.runtime()
}

func (c *cli) pull(args []string) error {
	fs := newFlags("pull", "IMAGE")
	platform := fs.String("platform", "", "os/arch[/variant] of a multi-arch image (default: the host's)")
	rt, err := c.imageArg(fs, args)
	if err != nil {
		return err
	}
	// Ctrl-C stops the download; the next pull resumes it.
	sigs := catchSignals()
	defer sigs.release()
	bar := newProgress(c.stdout)
	img, err := rt.Pull(sigs.ctx, fs.Arg(0), libbox.PullOptions{Platform: *platform, Progress: bar.update})
	bar.done()
	if s := sigs.handOff(); s != 0 {
		fmt.Fprintf(c.stderr, "box: pull interrupted by %s; pull again to resume\n", unix.SignalName(s))
		return exitError{128 + int(s)}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%s %s\n", img.Ref, img.ID)
	return nil
}

func (c *cli) images(args []string) error {
	fs := newFlags("images", "")
	if err := parseArgs(fs, args, 0, 0, "takes no arguments"); err != nil {
		return err
	}
	rt, err := c.runtime()
	if err != nil {
		return err
	}
	imgs, err := rt.Images(context.Background())
	if err != nil {
		return err
	}
	tw := c.table("REF\tID\tSIZE\tCREATED")
	for _, img := range imgs {
		fmt.Fprintf(tw, "%s\t%s\t%.1f MB\t%s\n", img.Ref, short(img.ID), float64(img.Size)/1e6, ago(img.Created))
	}
	return tw.Flush()
}

// image groups image subcommands: `box image prune`, and the Docker
// spellings of the others (ls, pull, rm).
func (c *cli) image(args []string) error {
	if len(args) == 0 {
		return usageErr("image: want a subcommand: prune, ls, pull or rm")
	}
	switch args[0] {
	case "prune":
		return c.imagePrune(args[1:])
	case "ls":
		return c.images(args[1:])
	case "pull":
		return c.pull(args[1:])
	case "rm":
		return c.rmi(args[1:])
	}
	return usageErr("image: unknown subcommand %q (prune, ls, pull, rm)", args[0])
}

// imagePrune deletes what no image name refers to any more: images a
// moved tag or a forced rmi left (once no box uses them), unneeded layers
// and the leftovers of interrupted pulls.
func (c *cli) imagePrune(args []string) error {
	fs := newFlags("image prune", "")
	if err := parseArgs(fs, args, 0, 0, "takes no arguments"); err != nil {
		return err
	}
	rt, err := c.runtime()
	if err != nil {
		return err
	}
	rep, err := rt.PruneImages(context.Background())
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "deleted %d images and %d blobs, reclaimed %.1f MB\n", rep.Roots, rep.Blobs, float64(rep.Bytes)/1e6)
	return nil
}

func (c *cli) rmi(args []string) error {
	fs := newFlags("rmi", "IMAGE...")
	force := fs.Bool("f", false, "remove even if a box uses it")
	if err := parseArgs(fs, args, 1, -1, "want at least one IMAGE"); err != nil {
		return err
	}
	if err := checkNames("rmi", fs.Args()...); err != nil {
		return err
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
