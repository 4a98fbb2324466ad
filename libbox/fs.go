package libbox

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"sync"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/agentpb"
)

// The file-system API works on the running box's files without host temp
// files or processes in the box. Paths follow the copy rules: absolute box
// paths, symlinks resolved inside the box root as in a chroot, ".."
// refused (ErrInvalidArgument). A missing path is ErrNotFound, a directory
// where a file is wanted (or the reverse) ErrFailedPrecondition.

// fsChunk is the size of the data messages WriteFile sends.
const fsChunk = 256 << 10

// FileType is the type of a FileInfo.
type FileType string

const (
	FileTypeFile    FileType = "file"
	FileTypeDir     FileType = "dir"
	FileTypeSymlink FileType = "symlink"
	FileTypeOther   FileType = "other"
)

// FileInfo describes one path of a box (a symlink itself, not its target).
type FileInfo struct {
	Name       string      `json:"name"`
	Path       string      `json:"path"`
	Type       FileType    `json:"type"`
	Size       int64       `json:"size"`
	Mode       fs.FileMode `json:"-"`    // permission bits with setuid, setgid, sticky
	UnixMode   uint32      `json:"mode"` // the same as chmod writes them (0o4755)
	UID        uint32      `json:"uid"`
	GID        uint32      `json:"gid"`
	ModTime    time.Time   `json:"mtime"`
	LinkTarget string      `json:"link_target,omitempty"`
}

func fileInfoFromPB(fi *agentpb.FileInfo) FileInfo {
	t := FileTypeOther
	switch fi.GetType() {
	case agentpb.FileInfo_FILE:
		t = FileTypeFile
	case agentpb.FileInfo_DIR:
		t = FileTypeDir
	case agentpb.FileInfo_SYMLINK:
		t = FileTypeSymlink
	}
	return FileInfo{
		Name: fi.GetName(), Path: fi.GetPath(), Type: t, Size: fi.GetSize(),
		Mode: FileModeOf(fi.GetMode()), UnixMode: fi.GetMode(), UID: fi.GetUid(), GID: fi.GetGid(),
		ModTime: time.Unix(0, fi.GetMtimeUnixNanos()).UTC(), LinkTarget: fi.GetLinkTarget(),
	}
}

// WriteOptions shape a write. The zero value writes mode 0644 files owned
// by the box's default user, creating missing parent directories.
type WriteOptions struct {
	Mode      fs.FileMode // permission bits; 0: 0644
	NoParents bool        // fail (ErrNotFound) when the parent directory is missing
	User      string      // owner: "name", "uid" or "uid:gid"; "": the box's default user
}

// FileData is one file of WriteFiles.
type FileData struct {
	Path string      `json:"path"`
	Data []byte      `json:"data"`
	Mode fs.FileMode `json:"mode,omitempty"` // 0: the options' mode
}

// ReadFile returns the whole content of a regular file of the box.
func (b *Box) ReadFile(ctx context.Context, path string) ([]byte, error) {
	var buf bytes.Buffer
	if _, err := b.ReadFileTo(ctx, path, &buf, 0, -1); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ReadFileTo streams length bytes of a file from offset to w (length < 0:
// to the end of the file) and returns the bytes written. Reading past the
// end returns what there is.
func (b *Box) ReadFileTo(ctx context.Context, path string, w io.Writer, offset, length int64) (int64, error) {
	if offset < 0 {
		return 0, errdefs.New(errdefs.InvalidArgument, "read %q: offset %d is negative", path, offset)
	}
	client, err := b.agentClient()
	if err != nil {
		return 0, err
	}
	if length == 0 {
		// Still check that the file exists and is a file.
		_, err := b.statFollow(ctx, path)
		return 0, err
	}
	if length < 0 {
		length = 0 // the protocol's "to the end"
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := client.ReadFile(ctx, &agentpb.ReadFileRequest{Path: path, Offset: offset, Length: length})
	if err != nil {
		return 0, b.execError(ctx, err)
	}
	var n int64
	for {
		chunk, err := st.Recv()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, b.execError(ctx, err)
		}
		m, werr := w.Write(chunk.GetData())
		n += int64(m)
		if werr != nil {
			return n, errdefs.Wrap(errdefs.Internal, werr, "read %q: write to caller", path)
		}
	}
}

// statFollow checks that path names a readable regular file (a zero-length read).
func (b *Box) statFollow(ctx context.Context, path string) (FileInfo, error) {
	client, err := b.agentClient()
	if err != nil {
		return FileInfo{}, err
	}
	st, err := client.ReadFile(ctx, &agentpb.ReadFileRequest{Path: path, Length: 1, Offset: 1 << 62})
	if err != nil {
		return FileInfo{}, b.execError(ctx, err)
	}
	for {
		if _, err := st.Recv(); err != nil {
			if err == io.EOF {
				return FileInfo{}, nil
			}
			return FileInfo{}, b.execError(ctx, err)
		}
	}
}

// WriteFile replaces (or creates) a file with data atomically: a reader
// sees the old content or the new one, never a part.
func (b *Box) WriteFile(ctx context.Context, path string, data []byte, opts WriteOptions) error {
	_, err := b.WriteFileFrom(ctx, path, bytes.NewReader(data), opts)
	return err
}

// WriteFileFrom is WriteFile streaming the content from r; it returns the
// bytes written.
func (b *Box) WriteFileFrom(ctx context.Context, path string, r io.Reader, opts WriteOptions) (int64, error) {
	return b.writeFiles(ctx, []fileSource{{path: path, r: r}}, opts, false)
}

// AppendFile appends data to a file, creating it (mode and owner from
// opts) when missing. Appends are not atomic for concurrent readers.
func (b *Box) AppendFile(ctx context.Context, path string, data []byte, opts WriteOptions) error {
	_, err := b.writeFiles(ctx, []fileSource{{path: path, r: bytes.NewReader(data)}}, opts, true)
	return err
}

// WriteFiles writes several files in one call, each atomically, in order;
// it stops at the first error (files before it are written).
func (b *Box) WriteFiles(ctx context.Context, files []FileData, opts WriteOptions) error {
	srcs := make([]fileSource, len(files))
	for i, f := range files {
		srcs[i] = fileSource{path: f.Path, r: bytes.NewReader(f.Data), mode: f.Mode}
	}
	_, err := b.writeFiles(ctx, srcs, opts, false)
	return err
}

type fileSource struct {
	path string
	r    io.Reader
	mode fs.FileMode
}

func (b *Box) writeFiles(ctx context.Context, files []fileSource, opts WriteOptions, appendTo bool) (int64, error) {
	if len(files) == 0 {
		return 0, nil
	}
	if opts.Mode&^(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
		return 0, errdefs.New(errdefs.InvalidArgument, "write: mode %v has more than permission bits", opts.Mode)
	}
	client, err := b.agentClient()
	if err != nil {
		return 0, err
	}
	user := opts.User
	if user == "" {
		user = b.cfg.User
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := client.WriteFile(ctx)
	if err != nil {
		return 0, b.execError(ctx, err)
	}
	// A send error means the agent answered early (an error): the answer
	// comes from CloseAndRecv.
	send := func(req *agentpb.WriteFileRequest) bool { return st.Send(req) == nil }
	var readErr error
	buf := make([]byte, fsChunk)
files:
	for _, f := range files {
		mode := f.mode
		if mode == 0 {
			mode = opts.Mode
		}
		hdr := &agentpb.WriteFileHeader{
			Path: f.path, Mode: unixMode(mode), MakeParents: !opts.NoParents, Append: appendTo, User: user,
		}
		if !send(&agentpb.WriteFileRequest{Header: hdr}) {
			break
		}
		for {
			n, err := io.ReadFull(f.r, buf)
			if n > 0 && !send(&agentpb.WriteFileRequest{Data: append([]byte(nil), buf[:n]...)}) {
				break files
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				readErr = errdefs.Wrap(errdefs.InvalidArgument, err, "write %q: read the content", f.path)
				break files
			}
		}
	}
	if readErr != nil {
		cancel() // the file being written is abandoned (its temp file removed)
		_, _ = st.CloseAndRecv()
		return 0, readErr
	}
	resp, err := st.CloseAndRecv()
	if err != nil {
		return 0, b.execError(ctx, err)
	}
	return resp.GetBytes(), nil
}

// FileModeOf turns chmod bits (0o4755) into an fs.FileMode.
func FileModeOf(m uint32) fs.FileMode {
	out := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		out |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= fs.ModeSticky
	}
	return out
}

// unixMode turns permission bits (with setuid/setgid/sticky) into chmod's.
func unixMode(m fs.FileMode) uint32 {
	out := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		out |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		out |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		out |= 0o1000
	}
	return out
}

// ListDir lists a directory down to depth levels (depth <= 1: its
// entries), sorted by path. Symlinks are listed, not followed.
func (b *Box) ListDir(ctx context.Context, path string, depth int) ([]FileInfo, error) {
	if depth < 0 {
		return nil, errdefs.New(errdefs.InvalidArgument, "list %q: depth %d is negative", path, depth)
	}
	client, err := b.agentClient()
	if err != nil {
		return nil, err
	}
	resp, err := client.ListDir(ctx, &agentpb.ListDirRequest{Path: path, Depth: int32(min(depth, 1<<20))})
	if err != nil {
		return nil, b.execError(ctx, err)
	}
	out := make([]FileInfo, len(resp.GetEntries()))
	for i, e := range resp.GetEntries() {
		out[i] = fileInfoFromPB(e)
	}
	return out, nil
}

// Stat describes a path; a final symlink is described, not followed.
func (b *Box) Stat(ctx context.Context, path string) (FileInfo, error) {
	client, err := b.agentClient()
	if err != nil {
		return FileInfo{}, err
	}
	fi, err := client.Stat(ctx, &agentpb.StatRequest{Path: path})
	if err != nil {
		return FileInfo{}, b.execError(ctx, err)
	}
	return fileInfoFromPB(fi), nil
}

// Exists reports whether a path exists (a dangling symlink exists).
func (b *Box) Exists(ctx context.Context, path string) (bool, error) {
	_, err := b.Stat(ctx, path)
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// Mkdir creates a directory owned by the box's default user. With
// parents, missing parents are created and an existing directory is no
// error (mkdir -p); without, an existing path is ErrAlreadyExists.
func (b *Box) Mkdir(ctx context.Context, path string, parents bool) error {
	client, err := b.agentClient()
	if err != nil {
		return err
	}
	_, err = client.Mkdir(ctx, &agentpb.MkdirRequest{Path: path, Parents: parents, User: b.cfg.User})
	if err != nil {
		return b.execError(ctx, err)
	}
	return nil
}

// Remove removes a file, a symlink (not its target) or a directory; a
// directory that is not empty needs recursive.
func (b *Box) Remove(ctx context.Context, path string, recursive bool) error {
	client, err := b.agentClient()
	if err != nil {
		return err
	}
	if _, err := client.Remove(ctx, &agentpb.RemoveRequest{Path: path, Recursive: recursive}); err != nil {
		return b.execError(ctx, err)
	}
	return nil
}

// Rename moves src to dst, replacing dst as rename(2) does.
func (b *Box) Rename(ctx context.Context, src, dst string) error {
	client, err := b.agentClient()
	if err != nil {
		return err
	}
	if _, err := client.Rename(ctx, &agentpb.RenameRequest{Src: src, Dst: dst}); err != nil {
		return b.execError(ctx, err)
	}
	return nil
}

// WatchEventType is what happened to a path.
type WatchEventType string

const (
	WatchCreate WatchEventType = "create"
	WatchWrite  WatchEventType = "write"
	WatchRemove WatchEventType = "remove"
	WatchRename WatchEventType = "rename"
	WatchChmod  WatchEventType = "chmod"
	// WatchOverflow says events were lost (the box produced them faster
	// than they were read); Path is the watched directory. Rescan it.
	WatchOverflow WatchEventType = "overflow"
)

// WatchEvent is one change below a watched directory.
type WatchEvent struct {
	Type  WatchEventType `json:"type"`
	Path  string         `json:"path"`
	IsDir bool           `json:"is_dir,omitempty"`
}

var watchTypes = map[agentpb.WatchEvent_Type]WatchEventType{
	agentpb.WatchEvent_CREATE: WatchCreate, agentpb.WatchEvent_WRITE: WatchWrite,
	agentpb.WatchEvent_REMOVE: WatchRemove, agentpb.WatchEvent_RENAME: WatchRename,
	agentpb.WatchEvent_CHMOD: WatchChmod, agentpb.WatchEvent_OVERFLOW: WatchOverflow,
}

// Watcher streams the changes below a directory. Events arrive in order on
// Events, which is closed when the watch ends: Close, ctx done, or the
// box stopped (Err then says why).
type Watcher struct {
	events chan WatchEvent
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	err    error // set before done closes
}

// Watch starts watching a directory (and, with recursive, every directory
// below it, also those created later). It returns once the watch is in
// place: changes made after it returns are reported.
func (b *Box) Watch(ctx context.Context, path string, recursive bool) (*Watcher, error) {
	client, err := b.agentClient()
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	st, err := client.Watch(wctx, &agentpb.WatchRequest{Path: path, Recursive: recursive})
	if err != nil {
		cancel()
		return nil, b.execError(ctx, err)
	}
	first, err := st.Recv()
	if err != nil {
		cancel()
		return nil, b.execError(ctx, err)
	}
	if first.GetType() != agentpb.WatchEvent_READY {
		cancel()
		return nil, errdefs.New(errdefs.Internal, "agent protocol: watch began with %v", first.GetType())
	}
	w := &Watcher{events: make(chan WatchEvent, 1024), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer close(w.events)
		for {
			ev, err := st.Recv()
			if err != nil {
				switch {
				case err == io.EOF:
					w.err = errdefs.New(errdefs.Unavailable, "watch %q: the box is shutting down", path)
				case wctx.Err() != nil:
					if ctx.Err() != nil {
						w.err = errdefs.Wrap(errdefs.CodeOf(ctx.Err()), ctx.Err(), "watch %q", path)
					}
				default:
					w.err = b.execError(wctx, err)
				}
				return
			}
			select {
			case w.events <- WatchEvent{Type: watchTypes[ev.GetType()], Path: ev.GetPath(), IsDir: ev.GetDir()}:
			case <-wctx.Done():
				return
			}
		}
	}()
	return w, nil
}

// Events delivers the changes; it is closed when the watch ends.
func (w *Watcher) Events() <-chan WatchEvent { return w.events }

// Err says why the watch ended: nil after Close, else the error. Valid
// once Events is closed.
func (w *Watcher) Err() error {
	select {
	case <-w.done:
		return w.err
	default:
		return nil
	}
}

// Close ends the watch and waits for its goroutine. Idempotent.
func (w *Watcher) Close() error {
	w.once.Do(w.cancel)
	<-w.done
	return nil
}
