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
	"strings"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/agentpb"
)

func checkBoxPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return errdefs.New(errdefs.InvalidArgument, "box path %q must be absolute", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return errdefs.New(errdefs.InvalidArgument, "box path %q must not contain '..'", p)
		}
	}
	if path.Clean(p) == "/" {
		return errdefs.New(errdefs.InvalidArgument, "box path %q: copy into or out of a directory below /", p)
	}
	return nil
}

// CopyIn copies a host file or directory to boxPath, which becomes the copy
// (its parents are created). It returns the bytes of file content copied.
func (b *Box) CopyIn(ctx context.Context, hostPath, boxPath string) (int64, error) {
	if err := checkBoxPath(boxPath); err != nil {
		return 0, err
	}
	fi, err := os.Lstat(hostPath)
	if err != nil {
		return 0, errdefs.Wrap(errdefs.NotFound, err, "copy in: host path")
	}
	client, err := b.agentClient()
	if err != nil {
		return 0, err
	}
	boxPath = path.Clean(boxPath)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := client.Upload(ctx)
	if err != nil {
		return 0, b.execError(ctx, err)
	}
	if err := st.Send(&agentpb.UploadRequest{Dir: path.Dir(boxPath)}); err != nil {
		_, rerr := st.CloseAndRecv()
		return 0, b.execError(ctx, rerr)
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeTar(pw, hostPath, path.Base(boxPath), fi))
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

// CopyOut copies a box file or directory to hostPath, which becomes the
// copy (its parent must exist). It returns the bytes of file content.
func (b *Box) CopyOut(ctx context.Context, boxPath, hostPath string) (int64, error) {
	if err := checkBoxPath(boxPath); err != nil {
		return 0, err
	}
	if hostPath == "" {
		return 0, errdefs.New(errdefs.InvalidArgument, "copy out: host path is empty")
	}
	if fi, err := os.Stat(filepath.Dir(hostPath)); err != nil || !fi.IsDir() {
		return 0, errdefs.New(errdefs.NotFound, "copy out: host directory %q does not exist", filepath.Dir(hostPath))
	}
	client, err := b.agentClient()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := client.Download(ctx, &agentpb.DownloadRequest{Path: path.Clean(boxPath)})
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
	n, err := extractTo(pr, hostPath)
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

// extractTo writes a tar stream from the agent (single top-level entry) so
// that its top entry becomes hostPath.
func extractTo(r io.Reader, hostPath string) (int64, error) {
	tr := tar.NewReader(r)
	var total int64
	top := ""
	for {
		h, err := tr.Next()
		if err == io.EOF {
			if top == "" {
				return 0, errdefs.New(errdefs.NotFound, "copy out: nothing to copy")
			}
			return total, nil
		}
		if err != nil {
			return total, err
		}
		name := strings.TrimSuffix(h.Name, "/")
		if top == "" {
			top = name
		}
		var rel string
		switch {
		case name == top:
			rel = ""
		case strings.HasPrefix(name, top+"/"):
			rel = name[len(top)+1:]
		default:
			return total, errdefs.New(errdefs.Internal, "copy out: unexpected entry %q", h.Name)
		}
		for _, part := range strings.Split(rel, "/") {
			if part == ".." {
				return total, errdefs.New(errdefs.InvalidArgument, "copy out: entry %q escapes", h.Name)
			}
		}
		dst := filepath.Join(hostPath, filepath.FromSlash(rel))
		mode := fs.FileMode(h.Mode) & fs.ModePerm
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return total, errdefs.Wrap(errdefs.InvalidArgument, err, "copy out")
			}
			_ = os.Chmod(dst, mode|0o700)
		case tar.TypeReg:
			_ = os.Remove(dst)
			f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_EXCL, mode)
			if err != nil {
				return total, errdefs.Wrap(errdefs.InvalidArgument, err, "copy out")
			}
			n, err := io.Copy(f, tr)
			total += n
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return total, err
			}
		case tar.TypeSymlink:
			_ = os.Remove(dst)
			if err := os.Symlink(h.Linkname, dst); err != nil {
				return total, errdefs.Wrap(errdefs.InvalidArgument, err, "copy out")
			}
		}
	}
}
