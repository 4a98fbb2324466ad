package agent

import (
	"archive/tar"
	"bufio"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/agentpb"
)

// Upload extracts a tar stream into a directory of the box. Every path is
// resolved through os.Root: nothing is written outside the box root, also
// not through symlinks.
func (a *Agent) Upload(stream agentpb.Agent_UploadServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	dirRel, err := boxRel(first.GetDir())
	if err != nil {
		return err
	}
	if err := a.froot.MkdirAll(dirRel, 0o755); err != nil {
		return rootError(first.GetDir(), err)
	}
	r := &uploadReader{stream: stream, buf: first.GetTar()}
	n, entries, err := extractTar(a.froot, dirRel, r)
	if err != nil {
		return err
	}
	// Drain what the client still sends (tar padding) before answering.
	_, _ = io.Copy(io.Discard, r)
	return stream.SendAndClose(&agentpb.UploadResponse{Bytes: n, Entries: int32(entries)})
}

type uploadReader struct {
	stream agentpb.Agent_UploadServer
	buf    []byte
	eof    bool
}

func (u *uploadReader) Read(p []byte) (int, error) {
	for len(u.buf) == 0 {
		if u.eof {
			return 0, io.EOF
		}
		msg, err := u.stream.Recv()
		if err == io.EOF {
			u.eof = true
			return 0, io.EOF
		}
		if err != nil {
			return 0, err
		}
		u.buf = msg.GetTar()
	}
	n := copy(p, u.buf)
	u.buf = u.buf[n:]
	return n, nil
}

// rootError classifies an error from os.Root.
func rootError(p string, err error) error {
	switch {
	case err == nil:
		return nil
	case strings.Contains(err.Error(), "escapes"):
		return errdefs.Wrap(errdefs.InvalidArgument, err, "path %q escapes the box root", p)
	case errors.Is(err, fs.ErrNotExist):
		return errdefs.Wrap(errdefs.NotFound, err, "path %q", p)
	case errors.Is(err, fs.ErrExist):
		return errdefs.Wrap(errdefs.AlreadyExists, err, "path %q", p)
	case errors.Is(err, fs.ErrPermission):
		return errdefs.Wrap(errdefs.InvalidArgument, err, "path %q", p)
	}
	return errdefs.Wrap(errdefs.Internal, err, "path %q", p)
}

// entryRel validates a tar entry name and joins it under dirRel.
func entryRel(dirRel, name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || strings.ContainsRune(name, 0) {
		return "", errdefs.New(errdefs.InvalidArgument, "tar entry %q: absolute or empty names are not allowed", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", errdefs.New(errdefs.InvalidArgument, "tar entry %q escapes the target directory", name)
		}
	}
	return path.Join(dirRel, path.Clean(name)), nil
}

func extractTar(root *os.Root, dirRel string, r io.Reader) (int64, int, error) {
	tr := tar.NewReader(r)
	var total int64
	entries := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return total, entries, nil
		}
		if err != nil {
			return total, entries, errdefs.Wrap(errdefs.InvalidArgument, err, "read tar stream")
		}
		rel, err := entryRel(dirRel, h.Name)
		if err != nil {
			return total, entries, err
		}
		entries++
		mode := fs.FileMode(h.Mode) & fs.ModePerm
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(rel, 0o755); err != nil {
				return total, entries, rootError(h.Name, err)
			}
			_ = root.Chmod(rel, mode)
		case tar.TypeReg, tar.TypeRegA:
			if parent := path.Dir(rel); parent != "." {
				if err := root.MkdirAll(parent, 0o755); err != nil {
					return total, entries, rootError(h.Name, err)
				}
			}
			// Never write through an existing symlink at the final name.
			if fi, err := root.Lstat(rel); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
				if err := root.Remove(rel); err != nil {
					return total, entries, rootError(h.Name, err)
				}
			}
			f, err := root.OpenFile(rel, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
			if err != nil {
				return total, entries, rootError(h.Name, err)
			}
			n, err := io.Copy(f, tr)
			total += n
			cerr := f.Close()
			if err != nil {
				return total, entries, errdefs.Wrap(errdefs.Internal, err, "write %s", h.Name)
			}
			if cerr != nil {
				return total, entries, errdefs.Wrap(errdefs.Internal, cerr, "write %s", h.Name)
			}
			_ = root.Chmod(rel, mode)
		case tar.TypeSymlink:
			if parent := path.Dir(rel); parent != "." {
				if err := root.MkdirAll(parent, 0o755); err != nil {
					return total, entries, rootError(h.Name, err)
				}
			}
			_ = root.Remove(rel)
			if err := root.Symlink(h.Linkname, rel); err != nil {
				return total, entries, rootError(h.Name, err)
			}
		case tar.TypeLink:
			target, err := entryRel(dirRel, h.Linkname)
			if err != nil {
				return total, entries, err
			}
			_ = root.Remove(rel)
			if err := root.Link(target, rel); err != nil {
				return total, entries, rootError(h.Name, err)
			}
		default:
			// Devices, fifos and the like are not copied into boxes.
		}
	}
}

// Download streams a path of the box as a tar stream whose top-level entry
// is the base name of the path.
func (a *Agent) Download(req *agentpb.DownloadRequest, stream agentpb.Agent_DownloadServer) error {
	rel, err := boxRel(req.GetPath())
	if err != nil {
		return err
	}
	fi, err := a.froot.Lstat(rel)
	if err != nil {
		return rootError(req.GetPath(), err)
	}
	cw := &chunkWriter{stream: stream}
	bw := bufio.NewWriterSize(cw, chunkSize)
	tw := tar.NewWriter(bw)
	base := path.Base(rel)
	if rel == "." {
		base = "."
	}
	if err := a.addTar(tw, rel, base, fi); err != nil {
		return err
	}
	if fi.IsDir() {
		err = fs.WalkDir(a.froot.FS(), rel, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return rootError("/"+p, err)
			}
			if p == rel {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return rootError("/"+p, err)
			}
			name := path.Join(base, strings.TrimPrefix(p, rel+"/"))
			if rel == "." {
				name = p
			}
			return a.addTar(tw, p, name, info)
		})
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return errdefs.Wrap(errdefs.Unavailable, err, "send tar")
	}
	if err := bw.Flush(); err != nil {
		return errdefs.Wrap(errdefs.Unavailable, err, "send tar")
	}
	return nil
}

func (a *Agent) addTar(tw *tar.Writer, rel, name string, fi fs.FileInfo) error {
	var link string
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		l, err := a.froot.Readlink(rel)
		if err != nil {
			return rootError("/"+rel, err)
		}
		link = l
	case fi.Mode().IsRegular(), fi.IsDir():
	default:
		return nil // devices, sockets, fifos are skipped
	}
	h, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "tar header for /%s", rel)
	}
	h.Name = name
	if fi.IsDir() && !strings.HasSuffix(h.Name, "/") {
		h.Name += "/"
	}
	h.Uname, h.Gname = "", ""
	if err := tw.WriteHeader(h); err != nil {
		return errdefs.Wrap(errdefs.Unavailable, err, "send tar")
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	f, err := a.froot.Open(rel)
	if err != nil {
		return rootError("/"+rel, err)
	}
	defer f.Close()
	if _, err := io.CopyN(tw, f, h.Size); err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "read /%s", rel)
	}
	return nil
}

type chunkWriter struct {
	stream agentpb.Agent_DownloadServer
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	data := make([]byte, len(p))
	copy(data, p)
	if err := c.stream.Send(&agentpb.DownloadChunk{Tar: data}); err != nil {
		return 0, err
	}
	return len(p), nil
}
