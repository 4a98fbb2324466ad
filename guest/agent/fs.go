package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/agentpb"
)

// readChunk is the largest FileChunk a ReadFile sends.
const readChunk = 256 << 10

// maxListEntries bounds one ListDir answer.
const maxListEntries = 200000

// tempPrefix names the temp files of atomic writes; Watch hides them.
const tempPrefix = ".libbox-write-"

// ReadFile streams a byte range of a regular file.
func (a *Agent) ReadFile(req *agentpb.ReadFileRequest, stream agentpb.Agent_ReadFileServer) error {
	p := req.GetPath()
	if req.GetOffset() < 0 || req.GetLength() < 0 {
		return errdefs.New(errdefs.InvalidArgument, "read %q: offset %d and length %d must not be negative", p, req.GetOffset(), req.GetLength())
	}
	rel, err := a.resolveBox(p, true)
	if err != nil {
		return err
	}
	// Non-blocking: opening a FIFO for reading would otherwise wait for a
	// writer, holding an agent thread for as long as the box likes.
	f, err := a.froot.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fsError(p, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fsError(p, err)
	}
	if fi.IsDir() {
		return errdefs.New(errdefs.FailedPrecondition, "read %q: is a directory", p)
	}
	if !fi.Mode().IsRegular() {
		return errdefs.New(errdefs.FailedPrecondition, "read %q: not a regular file", p)
	}
	var r io.Reader = f
	if off := req.GetOffset(); off > 0 {
		r = io.NewSectionReader(f, off, 1<<62)
	}
	if n := req.GetLength(); n > 0 {
		r = io.LimitReader(r, n)
	}
	for {
		buf := make([]byte, readChunk)
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if serr := stream.Send(&agentpb.FileChunk{Data: buf[:n]}); serr != nil {
				return serr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return fsError(p, err)
		}
	}
}

// pendingFile is one file of a WriteFile stream being written.
type pendingFile struct {
	path   string // as the client gave it
	rel    string // final name, relative to the root
	tmp    string // temp name ("" when appending)
	f      *os.File
	mode   fs.FileMode
	u      *user
	chown  bool
	nbytes int64
}

// WriteFile writes the files of a stream: atomically (temp file in the
// same directory, then rename) unless appending.
func (a *Agent) WriteFile(stream agentpb.Agent_WriteFileServer) error {
	var cur *pendingFile
	defer func() {
		if cur != nil {
			a.abortWrite(cur)
		}
	}()
	var total int64
	files := 0
	// finish commits the file being written, if any.
	finish := func() error {
		if cur == nil {
			return nil
		}
		err := a.commitWrite(cur)
		cur = nil
		if err == nil {
			files++
		}
		return err
	}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if h := msg.GetHeader(); h != nil {
			if err := finish(); err != nil {
				return err
			}
			if cur, err = a.openWrite(h); err != nil {
				return err
			}
		}
		if data := msg.GetData(); len(data) > 0 {
			if cur == nil {
				return errdefs.New(errdefs.InvalidArgument, "write: data before the first file header")
			}
			n, err := cur.f.Write(data)
			cur.nbytes += int64(n)
			total += int64(n)
			if err != nil {
				return fsError(cur.path, err)
			}
		}
	}
	if err := finish(); err != nil {
		return err
	}
	return stream.SendAndClose(&agentpb.WriteFileResponse{Bytes: total, Files: int32(files)})
}

func (a *Agent) openWrite(h *agentpb.WriteFileHeader) (*pendingFile, error) {
	p := h.GetPath()
	rel, err := a.resolveBox(p, true)
	if err != nil {
		return nil, err
	}
	if rel == "." {
		return nil, errdefs.New(errdefs.FailedPrecondition, "write %q: is a directory", p)
	}
	u, err := lookupUser(a.root, h.GetUser())
	if err != nil {
		return nil, err
	}
	mode := fs.FileMode(h.GetMode()) & fs.ModePerm
	if h.GetMode() == 0 {
		mode = 0o644
	}
	pf := &pendingFile{path: p, rel: rel, mode: mode, u: u, chown: u.uid != 0 || u.gid != 0}
	parent := path.Dir(rel)
	if h.GetMakeParents() {
		if err := a.mkdirAllAs(p, parent, u); err != nil {
			return nil, err
		}
	} else if fi, err := a.froot.Stat(parent); err != nil {
		return nil, errdefs.Wrap(errdefs.NotFound, err, "write %q: parent directory", p)
	} else if !fi.IsDir() {
		return nil, errdefs.New(errdefs.FailedPrecondition, "write %q: parent is not a directory", p)
	}
	existing, err := a.froot.Lstat(rel)
	switch {
	case err == nil && existing.IsDir():
		return nil, errdefs.New(errdefs.FailedPrecondition, "write %q: is a directory", p)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, fsError(p, err)
	}
	if h.GetAppend() {
		pf.chown = pf.chown && existing == nil
		// Non-blocking, then only a regular file: opening a FIFO to write
		// would wait for a reader.
		pf.f, err = a.froot.OpenFile(rel, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NONBLOCK, mode)
		if errors.Is(err, syscall.ENXIO) {
			return nil, errdefs.New(errdefs.FailedPrecondition, "write %q: not a regular file", p)
		}
		if err != nil {
			return nil, fsError(p, err)
		}
		if fi, err := pf.f.Stat(); err != nil || !fi.Mode().IsRegular() {
			pf.f.Close()
			if err != nil {
				return nil, fsError(p, err)
			}
			return nil, errdefs.New(errdefs.FailedPrecondition, "write %q: not a regular file", p)
		}
		if existing != nil {
			pf.mode = 0 // keep the mode of the file appended to
		}
		return pf, nil
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	base := path.Base(rel)
	if len(base) > 200 {
		base = base[:200]
	}
	pf.tmp = path.Join(parent, tempPrefix+base+"-"+hex.EncodeToString(rnd[:]))
	pf.f, err = a.froot.OpenFile(pf.tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fsError(p, err)
	}
	return pf, nil
}

func (a *Agent) commitWrite(pf *pendingFile) error {
	if pf.mode != 0 {
		if err := pf.f.Chmod(pf.mode); err != nil {
			a.abortWrite(pf)
			return fsError(pf.path, err)
		}
	}
	if pf.chown {
		if err := pf.f.Chown(int(pf.u.uid), int(pf.u.gid)); err != nil {
			a.abortWrite(pf)
			return errdefs.Wrap(errdefs.FailedPrecondition, err, "write %q: give it to uid %d", pf.path, pf.u.uid)
		}
	}
	if err := pf.f.Close(); err != nil {
		pf.f = nil
		a.abortWrite(pf)
		return fsError(pf.path, err)
	}
	pf.f = nil
	if pf.tmp == "" {
		return nil
	}
	if err := a.froot.Rename(pf.tmp, pf.rel); err != nil {
		a.abortWrite(pf)
		return fsError(pf.path, err)
	}
	return nil
}

// abortWrite closes a file being written and removes its temp file.
func (a *Agent) abortWrite(pf *pendingFile) {
	if pf.f != nil {
		pf.f.Close()
		pf.f = nil
	}
	if pf.tmp != "" {
		_ = a.froot.Remove(pf.tmp)
	}
}

// mkdirAllAs creates the missing directories of rel, owned by u.
func (a *Agent) mkdirAllAs(p, rel string, u *user) error {
	if rel == "." || rel == "" {
		return nil
	}
	cur := ""
	for _, part := range strings.Split(rel, "/") {
		cur = path.Join(cur, part)
		fi, err := a.froot.Stat(cur)
		if err == nil {
			if !fi.IsDir() {
				return errdefs.New(errdefs.FailedPrecondition, "%q: %s is not a directory", p, boxAbs(cur))
			}
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fsError(p, err)
		}
		if err := a.froot.Mkdir(cur, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fsError(p, err)
		}
		if u.uid != 0 || u.gid != 0 {
			if err := a.froot.Lchown(cur, int(u.uid), int(u.gid)); err != nil {
				return errdefs.Wrap(errdefs.FailedPrecondition, err, "%q: give %s to uid %d", p, boxAbs(cur), u.uid)
			}
		}
	}
	return nil
}

// fileInfo describes rel (not following a final symlink) as box path abs.
func (a *Agent) fileInfo(rel, abs string, fi fs.FileInfo) *agentpb.FileInfo {
	out := &agentpb.FileInfo{
		Name:           path.Base(abs),
		Path:           abs,
		Size:           fi.Size(),
		Mode:           uint32(fi.Mode().Perm()),
		MtimeUnixNanos: fi.ModTime().UnixNano(),
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		out.Uid, out.Gid = st.Uid, st.Gid
		out.Mode = st.Mode & 0o7777
	}
	switch {
	case fi.Mode().IsRegular():
		out.Type = agentpb.FileInfo_FILE
	case fi.IsDir():
		out.Type = agentpb.FileInfo_DIR
	case fi.Mode()&fs.ModeSymlink != 0:
		out.Type = agentpb.FileInfo_SYMLINK
		out.LinkTarget, _ = a.froot.Readlink(rel)
	default:
		out.Type = agentpb.FileInfo_OTHER
	}
	return out
}

// cleanAbs is the caller's path, cleaned, for the paths of answers.
func cleanAbs(p string) string { return path.Clean(p) }

// Stat describes a path without following a final symlink.
func (a *Agent) Stat(_ context.Context, req *agentpb.StatRequest) (*agentpb.FileInfo, error) {
	p := req.GetPath()
	rel, err := a.resolveBox(p, false)
	if err != nil {
		return nil, err
	}
	fi, err := a.froot.Lstat(rel)
	if err != nil {
		return nil, fsError(p, err)
	}
	return a.fileInfo(rel, cleanAbs(p), fi), nil
}

// ListDir lists a directory down to depth levels, sorted by path.
// Symlinked directories are listed as symlinks, not entered.
func (a *Agent) ListDir(_ context.Context, req *agentpb.ListDirRequest) (*agentpb.ListDirResponse, error) {
	p := req.GetPath()
	depth := int(req.GetDepth())
	if depth < 0 {
		return nil, errdefs.New(errdefs.InvalidArgument, "list %q: depth %d must not be negative", p, depth)
	}
	if depth == 0 {
		depth = 1
	}
	rel, err := a.resolveBox(p, true)
	if err != nil {
		return nil, err
	}
	fi, err := a.froot.Stat(rel)
	if err != nil {
		return nil, fsError(p, err)
	}
	if !fi.IsDir() {
		return nil, errdefs.New(errdefs.FailedPrecondition, "list %q: not a directory", p)
	}
	resp := &agentpb.ListDirResponse{}
	if err := a.listInto(resp, p, rel, cleanAbs(p), depth); err != nil {
		return nil, err
	}
	return resp, nil
}

func (a *Agent) listInto(resp *agentpb.ListDirResponse, p, rel, abs string, depth int) error {
	d, err := a.froot.OpenFile(rel, os.O_RDONLY|syscall.O_DIRECTORY, 0) // never blocks on a FIFO
	if err != nil {
		return fsError(p, err)
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return fsError(p, err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		if len(resp.Entries) >= maxListEntries {
			return errdefs.New(errdefs.FailedPrecondition, "list %q: more than %d entries: list with a smaller depth", p, maxListEntries)
		}
		crel, cabs := path.Join(rel, e.Name()), path.Join(abs, e.Name())
		resp.Entries = append(resp.Entries, a.fileInfo(crel, cabs, info))
		if depth > 1 && info.IsDir() {
			if err := a.listInto(resp, p, crel, cabs, depth-1); err != nil {
				return err
			}
		}
	}
	return nil
}

// Mkdir creates a directory owned by the request's user.
func (a *Agent) Mkdir(_ context.Context, req *agentpb.MkdirRequest) (*agentpb.MkdirResponse, error) {
	p := req.GetPath()
	rel, err := a.resolveBox(p, true)
	if err != nil {
		return nil, err
	}
	u, err := lookupUser(a.root, req.GetUser())
	if err != nil {
		return nil, err
	}
	mode := fs.FileMode(req.GetMode()) & fs.ModePerm
	if mode == 0 {
		mode = 0o755
	}
	if fi, err := a.froot.Stat(rel); err == nil {
		if req.GetParents() && fi.IsDir() {
			return &agentpb.MkdirResponse{}, nil
		}
		return nil, errdefs.New(errdefs.AlreadyExists, "mkdir %q: already exists", p)
	}
	if req.GetParents() {
		if err := a.mkdirAllAs(p, path.Dir(rel), u); err != nil {
			return nil, err
		}
	}
	if err := a.froot.Mkdir(rel, mode); err != nil {
		return nil, fsError(p, err)
	}
	_ = a.froot.Chmod(rel, mode)
	if u.uid != 0 || u.gid != 0 {
		if err := a.froot.Lchown(rel, int(u.uid), int(u.gid)); err != nil {
			return nil, errdefs.Wrap(errdefs.FailedPrecondition, err, "mkdir %q: give it to uid %d", p, u.uid)
		}
	}
	return &agentpb.MkdirResponse{}, nil
}

// Remove removes a file, a symlink (not its target) or a directory.
func (a *Agent) Remove(_ context.Context, req *agentpb.RemoveRequest) (*agentpb.RemoveResponse, error) {
	p := req.GetPath()
	rel, err := a.resolveBox(p, false)
	if err != nil {
		return nil, err
	}
	if rel == "." {
		return nil, errdefs.New(errdefs.InvalidArgument, "remove %q: the box root cannot be removed", p)
	}
	fi, err := a.froot.Lstat(rel)
	if err != nil {
		return nil, fsError(p, err)
	}
	if fi.IsDir() && req.GetRecursive() {
		err = a.froot.RemoveAll(rel)
	} else {
		err = a.froot.Remove(rel)
	}
	if err != nil {
		return nil, fsError(p, err)
	}
	return &agentpb.RemoveResponse{}, nil
}

// Rename moves src to dst, replacing dst as rename(2) does.
func (a *Agent) Rename(_ context.Context, req *agentpb.RenameRequest) (*agentpb.RenameResponse, error) {
	src, err := a.resolveBox(req.GetSrc(), false)
	if err != nil {
		return nil, err
	}
	dst, err := a.resolveBox(req.GetDst(), false)
	if err != nil {
		return nil, err
	}
	if src == "." || dst == "." {
		return nil, errdefs.New(errdefs.InvalidArgument, "rename %q to %q: the box root cannot be moved or replaced", req.GetSrc(), req.GetDst())
	}
	if _, err := a.froot.Lstat(src); err != nil {
		return nil, fsError(req.GetSrc(), err)
	}
	if err := a.froot.Rename(src, dst); err != nil {
		return nil, fsError(req.GetDst(), err)
	}
	return &agentpb.RenameResponse{}, nil
}
