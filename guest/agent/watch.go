package agent

import (
	"errors"
	"os"
	"path"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/agentpb"
)

// maxPendingEvents bounds the events a Watch holds for a slow client;
// beyond it events are dropped and one OVERFLOW event says so.
const maxPendingEvents = 1 << 16

const watchMask = unix.IN_CREATE | unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_DELETE | unix.IN_DELETE_SELF |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_MOVE_SELF | unix.IN_EXCL_UNLINK

// watcher is one Watch: an inotify instance, the directories it watches,
// and the queue between its reader goroutine and the handler that sends.
//
// The reader goroutine is the only one that touches wds and the inotify
// file's reads; the handler owns the stream. They meet at mu.
type watcher struct {
	a         *Agent
	recursive bool
	fd        int      // the inotify fd, owned by file
	file      *os.File // closing it ends the reader
	rootWD    int32    // the watch of the watched directory itself

	// wds maps watch descriptors to the box path of their directory and
	// its root-relative path. Only the reader goroutine uses it after setup.
	wds map[int32][2]string
	// tempMoves holds the cookies of temp files (atomic writes) moved away.
	tempMoves map[uint32]bool

	mu sync.Mutex
	// queue is what the handler has yet to send. Guarded by mu.
	queue []*agentpb.WatchEvent
	// overflowed is set when events were dropped and not yet reported. Guarded by mu.
	overflowed bool
	// ended is set when the reader stopped; readErr says why. Guarded by mu.
	ended   bool
	readErr error
	wake    chan struct{} // capacity 1: something changed under mu
	root    string        // box path of the watched directory
}

// Watch streams inotify events (see agent.proto).
func (a *Agent) Watch(req *agentpb.WatchRequest, stream agentpb.Agent_WatchServer) error {
	p := req.GetPath()
	rel, err := a.resolveBox(p, true)
	if err != nil {
		return err
	}
	fi, err := a.froot.Stat(rel)
	if err != nil {
		return fsError(p, err)
	}
	if !fi.IsDir() {
		return errdefs.New(errdefs.FailedPrecondition, "watch %q: not a directory", p)
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return errdefs.Wrap(errdefs.Unavailable, err, "watch %q: inotify", p)
	}
	w := &watcher{
		a: a, recursive: req.GetRecursive(), fd: fd, file: os.NewFile(uintptr(fd), "inotify"), rootWD: -1,
		wds: map[int32][2]string{}, tempMoves: map[uint32]bool{},
		wake: make(chan struct{}, 1), root: cleanAbs(p),
	}
	if err := w.add(w.root, rel, false); err != nil {
		w.file.Close()
		return err
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		w.read()
	}()
	defer func() {
		w.file.Close() // ends the reader
		<-readerDone
	}()
	if err := stream.Send(&agentpb.WatchEvent{Type: agentpb.WatchEvent_READY, Path: w.root, Dir: true}); err != nil {
		return err
	}
	ctx := stream.Context()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.shutdown:
			return nil
		case <-w.wake:
		}
		w.mu.Lock()
		batch := w.queue
		w.queue = nil
		if w.overflowed {
			batch = append(batch, &agentpb.WatchEvent{Type: agentpb.WatchEvent_OVERFLOW, Path: w.root, Dir: true})
			w.overflowed = false
		}
		ended, readErr := w.ended, w.readErr
		w.mu.Unlock()
		for _, ev := range batch {
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
		if ended && len(batch) == 0 {
			return readErr
		}
	}
}

// add watches the directory rel (box path abs) and, when recursive, every
// directory below it. With report, what it finds is sent as CREATE events
// (a directory created under a recursive watch may be filled before its
// watch is in place).
func (w *watcher) add(abs, rel string, report bool) error {
	wd, err := unix.InotifyAddWatch(w.fd, w.a.hostPath(rel), watchMask|unix.IN_ONLYDIR|unix.IN_DONT_FOLLOW)
	if err != nil {
		if report {
			return nil // gone again, or not a directory any more
		}
		if errors.Is(err, unix.ENOSPC) {
			return errdefs.Wrap(errdefs.FailedPrecondition, err, "watch %q: out of inotify watches (raise fs.inotify.max_user_watches)", abs)
		}
		return fsError(abs, err)
	}
	w.wds[int32(wd)] = [2]string{abs, rel}
	if w.rootWD < 0 {
		w.rootWD = int32(wd)
	}
	if !w.recursive {
		return nil
	}
	d, err := w.a.froot.OpenFile(rel, os.O_RDONLY|unix.O_DIRECTORY, 0) // never blocks on a FIFO
	if err != nil {
		return nil
	}
	entries, _ := d.ReadDir(-1)
	d.Close()
	for _, e := range entries {
		cabs, crel := path.Join(abs, e.Name()), path.Join(rel, e.Name())
		if report && !strings.HasPrefix(e.Name(), tempPrefix) {
			w.push(&agentpb.WatchEvent{Type: agentpb.WatchEvent_CREATE, Path: cabs, Dir: e.IsDir()})
		}
		if e.IsDir() {
			if err := w.add(cabs, crel, report); err != nil {
				return err
			}
		}
	}
	return nil
}

// push queues an event, folding it into the previous one when they are
// the same, and dropping it (marking an overflow) when the queue is full.
func (w *watcher) push(ev *agentpb.WatchEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := len(w.queue); n > 0 {
		last := w.queue[n-1]
		if last.Type == ev.Type && last.Path == ev.Path {
			return
		}
	}
	if len(w.queue) >= maxPendingEvents {
		w.overflowed = true
	} else {
		w.queue = append(w.queue, ev)
	}
	w.signal()
}

func (w *watcher) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *watcher) overflow() {
	w.mu.Lock()
	w.overflowed = true
	w.mu.Unlock()
	w.signal()
}

// read decodes inotify events until the file is closed.
func (w *watcher) read() {
	buf := make([]byte, 256<<10)
	var err error
	for {
		var n int
		n, err = w.file.Read(buf)
		if err != nil {
			break
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			raw := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := ""
			if raw.Len > 0 {
				nb := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(raw.Len)]
				name = strings.TrimRight(string(nb), "\x00")
			}
			off += unix.SizeofInotifyEvent + int(raw.Len)
			w.handle(raw.Wd, raw.Mask, raw.Cookie, name)
		}
	}
	w.mu.Lock()
	w.ended = true
	if !errors.Is(err, os.ErrClosed) {
		w.readErr = errdefs.Wrap(errdefs.Internal, err, "watch %q: read inotify", w.root)
	}
	w.mu.Unlock()
	w.signal()
}

func (w *watcher) handle(wd int32, mask, cookie uint32, name string) {
	if mask&unix.IN_Q_OVERFLOW != 0 {
		w.overflow()
		return
	}
	dir, ok := w.wds[wd]
	if !ok {
		return
	}
	if mask&unix.IN_IGNORED != 0 {
		delete(w.wds, wd)
		return
	}
	isDir := mask&unix.IN_ISDIR != 0
	abs, rel := dir[0], dir[1]
	if name != "" {
		abs, rel = path.Join(abs, name), path.Join(rel, name)
	}
	if strings.HasPrefix(name, tempPrefix) {
		// The temp file of an atomic write: its rename into place is the
		// event the caller sees (as a write).
		if mask&unix.IN_MOVED_FROM != 0 {
			w.tempMoves[cookie] = true
		}
		return
	}
	var t agentpb.WatchEvent_Type
	switch {
	case mask&unix.IN_CREATE != 0:
		t = agentpb.WatchEvent_CREATE
	case mask&unix.IN_MODIFY != 0:
		t = agentpb.WatchEvent_WRITE
	case mask&unix.IN_ATTRIB != 0:
		t = agentpb.WatchEvent_CHMOD
	case mask&(unix.IN_DELETE|unix.IN_DELETE_SELF) != 0:
		t = agentpb.WatchEvent_REMOVE
		if mask&unix.IN_DELETE_SELF != 0 && wd != w.rootWD {
			return // reported by its parent
		}
	case mask&unix.IN_MOVED_TO != 0:
		t = agentpb.WatchEvent_RENAME
		if w.tempMoves[cookie] {
			delete(w.tempMoves, cookie)
			t = agentpb.WatchEvent_WRITE
		}
	case mask&(unix.IN_MOVED_FROM|unix.IN_MOVE_SELF) != 0:
		if mask&unix.IN_MOVE_SELF != 0 && wd != w.rootWD {
			return
		}
		t = agentpb.WatchEvent_RENAME
	default:
		return
	}
	w.push(&agentpb.WatchEvent{Type: t, Path: abs, Dir: isDir})
	if w.recursive && isDir && mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0 {
		if err := w.add(abs, rel, true); err != nil {
			w.overflow()
		}
	}
}
