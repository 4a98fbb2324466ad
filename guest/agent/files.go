package agent

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/agentpb"
	"github.com/libbox/libbox/internal/tarcopy"
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
		n, entries, err = a.extract(tr, nil, tarcopy.Below(dirRel))
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
	rel, err := a.resolveCopy(dest, true)
	if err != nil {
		return 0, 0, err
	}
	d := tarcopy.Missing
	if fi, err := a.froot.Stat(rel); err == nil && fi.IsDir() {
		d = tarcopy.Dir
	} else if err == nil {
		d = tarcopy.File
	} else if !errors.Is(err, fs.ErrNotExist) {
		return 0, 0, fsError(dest, err)
	}
	into, name, err := tarcopy.Place(fmt.Sprintf("copy to %q", dest), dest, d, topName, top.Typeflag == tar.TypeDir, contents)
	if err != nil {
		return 0, 0, err
	}
	dirRel := rel
	if !into {
		dirRel, name = path.Dir(rel), path.Base(rel)
	}
	if err := a.froot.MkdirAll(dirRel, 0o755); err != nil {
		return 0, 0, rootError(dest, err)
	}
	return a.extract(tr, top, tarcopy.Renamer(dirRel, topName, name))
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

// extract writes a tar stream below the box root (tarcopy.Extract) and
// classifies a failed entry as os.Root's error.
func (a *Agent) extract(tr *tar.Reader, first *tar.Header, place func(string) (string, bool, error)) (int64, int, error) {
	n, entries, err := tarcopy.Extract(a.froot, tr, first, place, 0)
	if ee, ok := err.(*tarcopy.EntryError); ok {
		return n, entries, rootError(ee.Entry, ee.Err)
	}
	return n, entries, err
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
	// Non-blocking: a FIFO put in its place since the walk must not
	// hold the copy (and an agent thread) until a writer comes.
	f, err := a.froot.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
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
