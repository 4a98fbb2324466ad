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
	"slices"
	"strings"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/agentpb"
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

// copiesContents reports whether a copy source names a directory's
// contents (SRC/.).
func copiesContents(p string) bool {
	return p == "." || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, string(filepath.Separator)+".")
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
	if err := st.Send(&agentpb.UploadRequest{Dest: boxPath, Contents: fi.IsDir() && copiesContents(hostPath)}); err != nil {
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
	n, err := copyInto(pr, hostPath, copiesContents(boxPath))
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
	srcDir := h.Typeflag == tar.TypeDir
	mustBeDir := strings.HasSuffix(dest, string(filepath.Separator)) || copiesContents(dest)
	var dir, name string
	fi, err := os.Stat(dest)
	switch {
	case err == nil && fi.IsDir():
		dir, name = dest, top
		if contents && srcDir {
			name = ""
		} else if top == "." {
			return 0, errdefs.New(errdefs.InvalidArgument, "copy out: the box's / goes into a directory only as its contents (BOX:/.)")
		}
	case err == nil:
		if srcDir {
			return 0, errdefs.New(errdefs.FailedPrecondition, "copy out: cannot copy a directory onto the file %q", dest)
		}
		if mustBeDir {
			return 0, errdefs.New(errdefs.FailedPrecondition, "copy out: %q is not a directory", dest)
		}
		dir, name = filepath.Split(dest)
	case errors.Is(err, fs.ErrNotExist):
		if mustBeDir && !srcDir {
			return 0, errdefs.New(errdefs.NotFound, "copy out: host directory %q does not exist (create it, or drop the trailing /)", dest)
		}
		dir, name = filepath.Split(filepath.Clean(dest))
		if pfi, err := os.Stat(orDot(dir)); err != nil || !pfi.IsDir() {
			return 0, errdefs.New(errdefs.NotFound, "copy out: host directory %q does not exist", orDot(dir))
		}
	default:
		return 0, errdefs.Wrap(errdefs.InvalidArgument, err, "copy out")
	}
	root, err := os.OpenRoot(orDot(dir))
	if err != nil {
		return 0, errdefs.Wrap(errdefs.InvalidArgument, err, "copy out")
	}
	defer root.Close()
	var total int64
	for ; err == nil; h, err = tr.Next() {
		rest, ok := strings.CutPrefix(strings.TrimSuffix(h.Name, "/"), top)
		if !ok || (rest != "" && rest[0] != '/') || slices.Contains(strings.Split(rest, "/"), "..") {
			return total, errdefs.New(errdefs.Internal, "copy out: unexpected entry %q", h.Name)
		}
		rel := path.Join(name, strings.TrimPrefix(rest, "/"))
		if rel == "" {
			continue // the top directory of SRC/.: dest itself
		}
		n, werr := writeEntry(root, rel, h, tr)
		total += n
		if werr != nil {
			return total, errdefs.Wrap(errdefs.InvalidArgument, werr, "copy out: %s", filepath.Join(dir, filepath.FromSlash(rel)))
		}
	}
	if err != io.EOF {
		return total, errdefs.Wrap(errdefs.Internal, err, "copy out: read tar stream")
	}
	return total, nil
}

func orDot(dir string) string {
	if dir == "" {
		return "."
	}
	return dir
}

// writeEntry writes one tar entry at rel inside root.
func writeEntry(root *os.Root, rel string, h *tar.Header, r io.Reader) (int64, error) {
	mode := fs.FileMode(h.Mode) & fs.ModePerm
	switch h.Typeflag {
	case tar.TypeDir:
		if err := root.MkdirAll(rel, 0o755); err != nil {
			return 0, err
		}
		return 0, root.Chmod(rel, mode|0o700)
	case tar.TypeReg:
		_ = root.Remove(rel)
		f, err := root.OpenFile(rel, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_EXCL, mode)
		if err != nil {
			return 0, err
		}
		n, err := io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return n, err
	case tar.TypeSymlink:
		_ = root.Remove(rel)
		return 0, root.Symlink(h.Linkname, rel)
	}
	return 0, nil // devices, fifos and the like are not copied out
}
