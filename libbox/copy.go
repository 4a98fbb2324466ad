package libbox

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/agentpb"
	"github.com/libbox/libbox/internal/tarcopy"
)

// Copies follow docker cp's rules (users come from it): a box path may be
// relative (to the box's /), its symlinks resolve inside the box root as in
// a chroot and ".." stops at the root; SRC copied to an existing directory
// lands inside it under its own name, SRC/. copies a directory's contents;
// a directory never replaces a file; DEST ending in "/" must be a
// directory. The agent applies the box side, copyInto the host side.

// checkCopyPath validates a path given to a copy.
func checkCopyPath(what, p string) error {
	if p == "" {
		return errdefs.New(errdefs.InvalidArgument, "copy: %s is empty", what)
	}
	if strings.ContainsRune(p, 0) {
		return errdefs.New(errdefs.InvalidArgument, "copy: %s %q contains a NUL byte", what, p)
	}
	return nil
}

// CopyIn copies a host file or directory into the box with docker cp's
// rules: into boxPath when it is an existing directory (hostPath/. copies
// the contents), else to boxPath (its parents are created). It returns
// the bytes of file content copied.
func (b *Box) CopyIn(ctx context.Context, hostPath, boxPath string) (int64, error) {
	if err := checkCopyPath("host path", hostPath); err != nil {
		return 0, err
	}
	if err := checkCopyPath("box path", boxPath); err != nil {
		return 0, err
	}
	fi, err := os.Lstat(hostPath)
	if err != nil {
		return 0, errdefs.Wrap(errdefs.NotFound, err, "copy in: host path")
	}
	abs, err := filepath.Abs(hostPath)
	if err != nil {
		return 0, errdefs.Wrap(errdefs.InvalidArgument, err, "copy in: host path")
	}
	top := filepath.Base(abs)
	if top == string(filepath.Separator) {
		return 0, errdefs.New(errdefs.InvalidArgument, "copy in: the host's / cannot be copied: name a directory below it")
	}
	client, err := b.agentClient()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := client.Upload(ctx)
	if err != nil {
		return 0, b.execError(ctx, err)
	}
	if err := st.Send(&agentpb.UploadRequest{Dest: boxPath, Contents: fi.IsDir() && tarcopy.Contents(hostPath)}); err != nil {
		_, rerr := st.CloseAndRecv()
		return 0, b.execError(ctx, rerr)
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeTar(pw, hostPath, top, fi))
	}()
	buf := make([]byte, 256<<10)
	var sendErr error
	for {
		n, rerr := pr.Read(buf)
		if n > 0 {
			data := append([]byte(nil), buf[:n]...)
			if err := st.Send(&agentpb.UploadRequest{Tar: data}); err != nil {
				sendErr = err
				break
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			pr.CloseWithError(rerr)
			cancel()
			return 0, errdefs.Wrap(errdefs.InvalidArgument, rerr, "copy in: read %s", hostPath)
		}
	}
	pr.Close()
	resp, err := st.CloseAndRecv()
	if err != nil {
		return 0, b.execError(ctx, err)
	}
	if sendErr != nil {
		return 0, b.execError(ctx, sendErr)
	}
	return resp.GetBytes(), nil
}

// writeTar writes hostPath as a tar stream whose top entry is named top.
func writeTar(w io.Writer, hostPath, top string, fi fs.FileInfo) error {
	tw := tar.NewWriter(w)
	add := func(p, name string, fi fs.FileInfo) error {
		var link string
		if fi.Mode()&fs.ModeSymlink != 0 {
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			link = l
		} else if !fi.Mode().IsRegular() && !fi.IsDir() {
			return nil
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name = name
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.CopyN(tw, f, h.Size)
			f.Close()
			return err
		}
		return nil
	}
	if err := add(hostPath, top, fi); err != nil {
		return err
	}
	if fi.IsDir() {
		err := filepath.WalkDir(hostPath, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if p == hostPath {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(hostPath, p)
			return add(p, top+"/"+filepath.ToSlash(rel), info)
		})
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

// CopyOut copies a box file or directory to the host with docker cp's
// rules: into hostPath when it is an existing directory (BOX:DIR/. copies
// the contents), else to hostPath, whose parent must exist. It returns the
// bytes of file content copied.
func (b *Box) CopyOut(ctx context.Context, boxPath, hostPath string) (int64, error) {
	if err := checkCopyPath("box path", boxPath); err != nil {
		return 0, err
	}
	if err := checkCopyPath("host path", hostPath); err != nil {
		return 0, err
	}
	client, err := b.agentClient()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := client.Download(ctx, &agentpb.DownloadRequest{Path: boxPath})
	if err != nil {
		return 0, b.execError(ctx, err)
	}
	pr, pw := io.Pipe()
	recvDone := make(chan error, 1)
	go func() {
		for {
			ch, err := st.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					pw.Close()
					recvDone <- nil
				} else {
					e := b.execError(ctx, err)
					pw.CloseWithError(e)
					recvDone <- e
				}
				return
			}
			if _, err := pw.Write(ch.Tar); err != nil {
				recvDone <- nil
				return
			}
		}
	}()
	n, err := copyInto(pr, hostPath, tarcopy.Contents(boxPath))
	if err == nil {
		// Read to the end of the stream (tar padding) so it ends cleanly.
		_, _ = io.Copy(io.Discard, pr)
	} else {
		pr.CloseWithError(io.ErrClosedPipe)
		cancel()
	}
	rerr := <-recvDone
	if rerr != nil {
		return n, rerr
	}
	return n, err
}

// copyInto writes a tar stream from the box (one top-level entry) to dest
// by docker cp's rules. The stream is not trusted: every entry is written
// through an os.Root of the destination directory, so no entry lands
// outside it, also not through a symlink an earlier entry made.
func copyInto(r io.Reader, dest string, contents bool) (int64, error) {
	tr := tar.NewReader(r)
	h, err := tr.Next()
	if err == io.EOF {
		return 0, errdefs.New(errdefs.NotFound, "copy out: nothing to copy")
	}
	if err != nil {
		return 0, errdefs.Wrap(errdefs.Internal, err, "copy out: read tar stream")
	}
	top := strings.TrimSuffix(h.Name, "/")
	if top == "" || top == ".." || strings.Contains(top, "/") {
		return 0, errdefs.New(errdefs.Internal, "copy out: unexpected top entry %q", h.Name)
	}
	d := tarcopy.Missing
	if fi, err := os.Stat(dest); err == nil && fi.IsDir() {
		d = tarcopy.Dir
	} else if err == nil {
		d = tarcopy.File
	} else if !errors.Is(err, fs.ErrNotExist) {
		return 0, errdefs.Wrap(errdefs.InvalidArgument, err, "copy out")
	}
	into, name, err := tarcopy.Place("copy out", dest, d, top, h.Typeflag == tar.TypeDir, contents)
	if err != nil {
		return 0, err
	}
	dir := dest
	if !into {
		dir, name = filepath.Split(filepath.Clean(dest))
		if fi, err := os.Stat(orDot(dir)); err != nil || !fi.IsDir() {
			return 0, errdefs.New(errdefs.NotFound, "copy out: host directory %q does not exist", orDot(dir))
		}
	}
	root, err := os.OpenRoot(orDot(dir))
	if err != nil {
		return 0, errdefs.Wrap(errdefs.InvalidArgument, err, "copy out")
	}
	defer root.Close()
	// The host user must be able to fill the directories it makes.
	total, _, err := tarcopy.Extract(root, tr, h, tarcopy.Renamer(".", top, name), 0o700)
	if ee, ok := err.(*tarcopy.EntryError); ok {
		return total, errdefs.Wrap(errdefs.InvalidArgument, ee.Err, "copy out: %s", filepath.Join(dir, filepath.FromSlash(ee.Path)))
	}
	if err != nil && errdefs.CodeOf(err) == errdefs.InvalidArgument {
		// The box sent a stream the agent never makes.
		return total, errdefs.New(errdefs.Internal, "copy out: %v", err)
	}
	return total, err
}

func orDot(dir string) string {
	if dir == "" {
		return "."
	}
	return dir
}
