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
	r := &uploadReader{stream: stream, buf: first.GetTar()}
	tr := tar.NewReader(r)
	var n int64
	var entries int
	if first.GetDest() != "" {
		n, entries, err = a.copyIn(tr, first.GetDest(), first.GetContents())
	} else {
		var dirRel string
		if dirRel, err = boxRel(first.GetDir()); err != nil {
			return err
		}
		if err := a.froot.MkdirAll(dirRel, 0o755); err != nil {
			return rootError(first.GetDir(), err)
		}
		n, entries, err = extractTar(a.froot, tr, nil, func(name string) (string, bool, error) {
			rel, err := entryRel(dirRel, name)
			return rel, true, err
		})
	}
	if err != nil {
		return err
	}
	// Drain what the client still sends (tar padding) before answering.
	_, _ = io.Copy(io.Discard, r)
	return stream.SendAndClose(&agentpb.UploadResponse{Bytes: n, Entries: int32(entries)})
}

// copyIn places the stream's single top-level entry at dest by docker cp's
// rules: into an existing directory under the entry's own name (or its
// contents, for SRC/.), over an existing file, or as dest itself (parents
// created). A directory never replaces a file; a dest ending in "/" must
// be a directory or be created as one from a directory.
func (a *Agent) copyIn(tr *tar.Reader, dest string, contents bool) (int64, int, error) {
	top, err := tr.Next()
	if err == io.EOF {
		return 0, 0, errdefs.New(errdefs.InvalidArgument, "copy to %q: the tar stream is empty", dest)
	}
	if err != nil {
		return 0, 0, errdefs.Wrap(errdefs.InvalidArgument, err, "read tar stream")
	}
	topName := strings.TrimSuffix(top.Name, "/")
	if topName == "" || topName == "." || topName == ".." || strings.ContainsAny(topName, "/\x00") {
		return 0, 0, errdefs.New(errdefs.InvalidArgument, "tar entry %q: the first entry must be a single name", top.Name)
	}
	srcDir := top.Typeflag == tar.TypeDir
	mustBeDir := strings.HasSuffix(dest, "/") || strings.HasSuffix(dest, "/.") || dest == "."
	rel, err := a.resolveCopy(dest, true)
	if err != nil {
		return 0, 0, err
	}
	var dirRel, name string
	fi, err := a.froot.Stat(rel)
	switch {
	case err == nil && fi.IsDir():
		dirRel, name = rel, topName
		if contents && srcDir {
			name = ""
		}
	case err == nil:
		if srcDir {
			return 0, 0, errdefs.New(errdefs.FailedPrecondition, "copy to %q: cannot copy a directory onto a file", dest)
		}
		if mustBeDir {
			return 0, 0, errdefs.New(errdefs.FailedPrecondition, "copy to %q: not a directory", dest)
		}
		dirRel, name = path.Dir(rel), path.Base(rel)
	case errors.Is(err, fs.ErrNotExist):
		if mustBeDir && !srcDir {
			return 0, 0, errdefs.New(errdefs.NotFound, "copy to %q: the directory does not exist (create it, or drop the trailing /)", dest)
		}
		dirRel, name = path.Dir(rel), path.Base(rel)
	default:
		return 0, 0, fsError(dest, err)
	}
	if err := a.froot.MkdirAll(dirRel, 0o755); err != nil {
		return 0, 0, rootError(dest, err)
	}
	// Entries are renamed from topName to name below dirRel; with no name
	// (contents), the top entry itself is dirRel and is left as it is.
	place := func(entry string) (string, bool, error) {
		rest, ok := strings.CutPrefix(strings.TrimSuffix(entry, "/"), topName)
		if !ok || (rest != "" && rest[0] != '/') {
			return "", false, errdefs.New(errdefs.InvalidArgument, "tar entry %q is not below the top entry %q", entry, topName)
		}
		if name == "" && rest == "" {
			return "", false, nil
		}
		rel, err := entryRel(dirRel, path.Join(name, strings.TrimPrefix(rest, "/")))
		return rel, true, err
	}
	return extractTar(a.froot, tr, top, place)
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

// extractTar writes the entries of tr (after first, if set) where place
// puts them: a path relative to the box root, or false to skip the entry.
func extractTar(root *os.Root, tr *tar.Reader, first *tar.Header, place func(string) (string, bool, error)) (int64, int, error) {
	var total int64
	entries := 0
	for {
		h := first
		first = nil
		if h == nil {
			var err error
			h, err = tr.Next()
			if err == io.EOF {
				return total, entries, nil
			}
			if err != nil {
				return total, entries, errdefs.Wrap(errdefs.InvalidArgument, err, "read tar stream")
			}
		}
		rel, ok, err := place(h.Name)
		if err != nil {
			return total, entries, err
		}
		if !ok {
			continue
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
			target, ok, err := place(h.Linkname)
			if err == nil && !ok {
				err = errdefs.New(errdefs.InvalidArgument, "tar entry %q: a hard link to a directory", h.Name)
			}
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
	p := req.GetPath()
	rel, err := a.resolveCopy(p, strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.") || p == ".")
	if err != nil {
		return err
	}
	fi, err := a.froot.Lstat(rel)
	if err != nil {
		return rootError(p, err)
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
				name = "./" + p
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
