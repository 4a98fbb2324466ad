package libbox

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/libbox/libbox/errdefs"
)

// exportSkip are the box paths whose contents are not the box's file
// system (kernel and runtime mounts): their directories are exported
// empty.
var exportSkip = []string{"/proc", "/sys", "/dev", "/run"}

// Export writes the box's file system as an OCI image layout in dir (a new
// or empty directory): one layer holding the whole tree, the image config
// carrying the box's environment, working dir, user and the image's
// command. `oci-layout:DIR` imports it again: the "commit" of other
// runtimes. Volumes and the kernel's file systems (/proc, /sys, /dev,
// /run) are left out; hard links become copies; device nodes, fifos and
// sockets are left out.
//
// The files are read through the box's agent: a stopped box is started
// for the export and stopped again. A running box is read as it is while
// its processes keep running (a file written meanwhile may be caught half
// written): snapshot it and export a clone, or stop it, for a consistent
// image.
func (b *Box) Export(ctx context.Context, dir string) error {
	if dir == "" || !filepath.IsAbs(dir) {
		return errdefs.New(errdefs.InvalidArgument, "export dir %q must be an absolute path", dir)
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return errdefs.New(errdefs.AlreadyExists, "export dir %s is not empty: pick a new directory", dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return errdefs.Wrap(errdefs.InvalidArgument, err, "export dir %s", dir)
	}
	// Start reattaches to a box another process runs, and starts a
	// stopped one (stopped again afterwards).
	wasRunning := b.Info().State == StateRunning
	if err := b.Start(ctx); err != nil {
		return err
	}
	if !wasRunning {
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			_ = b.Stop(sctx)
			cancel()
		}()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return errdefs.Wrap(errdefs.InvalidArgument, err, "export dir %s", dir)
	}
	tmp, err := os.CreateTemp(dir, ".layer-*.tar")
	if err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "export")
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := b.exportTar(ctx, tmp); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "export")
	}
	if err := b.writeLayout(dir, tmp.Name()); err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "write OCI layout %s", dir)
	}
	return nil
}

// exportTar writes the box's file tree as a tar stream.
func (b *Box) exportTar(ctx context.Context, w io.Writer) error {
	tops, err := b.ListDir(ctx, "/", 1)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	skip := append([]string{}, exportSkip...)
	for _, v := range b.cfg.Volumes {
		skip = append(skip, v.BoxPath)
	}
	skipped := func(p string) bool {
		for _, s := range skip {
			if p == s || strings.HasPrefix(p, s+"/") {
				return true
			}
		}
		return false
	}
	for _, top := range tops {
		if skipped(top.Path) && top.Type != FileTypeDir {
			continue
		}
		entries := []FileInfo{top}
		if top.Type == FileTypeDir && !skipped(top.Path) {
			sub, err := b.ListDir(ctx, top.Path, 1<<20)
			if err != nil {
				return err
			}
			entries = append(entries, sub...)
		}
		for _, fi := range entries {
			if fi.Path != top.Path && skipped(fi.Path) {
				continue
			}
			if err := b.tarEntry(ctx, tw, fi); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "export")
	}
	return nil
}

func (b *Box) tarEntry(ctx context.Context, tw *tar.Writer, fi FileInfo) error {
	h := &tar.Header{
		Name: strings.TrimPrefix(fi.Path, "/"), Mode: int64(fi.UnixMode & 0o7777),
		Uid: int(fi.UID), Gid: int(fi.GID), ModTime: fi.ModTime, Format: tar.FormatPAX,
	}
	switch fi.Type {
	case FileTypeDir:
		h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
	case FileTypeSymlink:
		h.Typeflag, h.Linkname = tar.TypeSymlink, fi.LinkTarget
	case FileTypeFile:
		h.Typeflag, h.Size = tar.TypeReg, fi.Size
	default:
		return nil
	}
	if err := tw.WriteHeader(h); err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "export %s", fi.Path)
	}
	if fi.Type != FileTypeFile || fi.Size == 0 {
		return nil
	}
	// A file that shrank meanwhile is padded with zeros, one that grew is
	// cut at the size listed: the tar stays well-formed.
	n, err := b.ReadFileTo(ctx, fi.Path, &capWriter{w: tw, left: fi.Size}, 0, fi.Size)
	if err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	if pad := fi.Size - n; pad > 0 {
		if _, err := io.CopyN(tw, zeroReader{}, pad); err != nil {
			return errdefs.Wrap(errdefs.Internal, err, "export %s", fi.Path)
		}
	}
	return nil
}

type capWriter struct {
	w    io.Writer
	left int64
}

func (c *capWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.w.Write(p)
	c.left -= int64(n)
	return n, err
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// writeLayout writes the OCI image layout of one gzip layer made from the
// tar file.
func (b *Box) writeLayout(dir, tarPath string) error {
	layer, err := tarball.LayerFromFile(tarPath)
	if err != nil {
		return err
	}
	arch := runtime.GOARCH
	if b.cfg.Platform != "" {
		if p, err := v1.ParsePlatform(b.cfg.Platform); err == nil {
			arch = p.Architecture
		}
	}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: "linux", Architecture: arch, RootFS: v1.RootFS{Type: "layers"}})
	if err != nil {
		return err
	}
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		CreatedBy: "libbox export of box " + b.cfg.ID, Created: v1.Time{Time: time.Now().UTC()},
	}})
	if err != nil {
		return err
	}
	img, err = mutate.Config(img, v1.Config{
		Env: b.cfg.Env, Entrypoint: b.cfg.ImageEntrypoint, Cmd: b.cfg.ImageCmd,
		WorkingDir: b.cfg.WorkingDir, User: b.cfg.User,
	})
	if err != nil {
		return err
	}
	img, err = mutate.CreatedAt(img, v1.Time{Time: time.Now().UTC()})
	if err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	tag := "latest"
	if b.cfg.Name != "" {
		tag = b.cfg.Name
	}
	return p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": path.Clean(tag)}))
}
