package libbox

import (
	"context"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/image"
)

// imageCommand resolves a Command with UseImageCmd the way `docker run
// IMAGE [ARG...]` does: the image's Entrypoint followed by cmd.Args, or by
// the image's Cmd when cmd.Args is empty (without an Entrypoint, cmd.Args
// replace the Cmd).
func (b *Box) imageCommand(cmd Command) (Command, error) {
	if !cmd.UseImageCmd {
		return cmd, nil
	}
	rest := cmd.Args
	if len(rest) == 0 {
		rest = b.cfg.ImageCmd
	}
	args := append(append([]string{}, b.cfg.ImageEntrypoint...), rest...)
	if len(args) == 0 || args[0] == "" {
		return cmd, errdefs.New(errdefs.InvalidArgument,
			"image %s has neither Entrypoint nor Cmd: give the command to run", b.cfg.Image)
	}
	cmd.Args = args
	cmd.UseImageCmd = false
	return cmd, nil
}

// PullOptions tune Runtime.Pull.
type PullOptions struct {
	// Platform is "os/arch[/variant]" to pick from a multi-arch image;
	// default: linux and the host's architecture.
	Platform string
	// Progress receives layer progress (may be nil).
	Progress func(image.Progress)
}

// Pull fetches an image (or refreshes it from its registry). When a tag
// moved, the image it named before is deleted unless a box uses it.
// Cancelling ctx stops the download; what was fetched is kept, and the
// next pull resumes it.
func (r *Runtime) Pull(ctx context.Context, ref string, o PullOptions) (*image.Image, error) {
	if err := r.checkOpen(); err != nil {
		return nil, err
	}
	return r.images.Pull(ctx, ref, image.Options{Platform: o.Platform, Progress: o.Progress, InUse: r.imageInUse()})
}

// PruneImages deletes the images no reference keeps (superseded by a moved
// tag, or removed by force while a box used them) once no box uses them,
// the cached blobs no image needs, and leftovers of interrupted pulls.
func (r *Runtime) PruneImages(ctx context.Context) (image.PruneReport, error) {
	if err := r.checkOpen(); err != nil {
		return image.PruneReport{}, err
	}
	return r.images.Prune(ctx, r.imageInUse())
}

// imageInUse reports whether a box of this home uses an image ID; when the
// boxes cannot be read, every image counts as used.
func (r *Runtime) imageInUse() func(string) bool {
	return func(id string) bool {
		cfgs, err := r.loadConfigs()
		if err != nil {
			return true
		}
		for _, c := range cfgs {
			if c.ImageID == id {
				return true
			}
		}
		return false
	}
}
