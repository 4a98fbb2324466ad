package bridge

// File-system, stats and process calls on a box handle. Reads stream their
// bytes to a callback as exec output does; watches deliver one JSON event
// per callback; every other call answers with JSON through done.

import (
	"context"
	"encoding/json"
	"syscall"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox"
)

// fsRequest is the request bag of every file-system call; each call reads
// the fields it documents (include/libbox.h) and rejects unknown ones.
type fsRequest struct {
	Path        string            `json:"path"`
	Offset      int64             `json:"offset"`
	Length      *int64            `json:"length"`       // read; absent or -1: to the end
	Mode        uint32            `json:"mode"`         // write, write_many
	MakeParents *bool             `json:"make_parents"` // write, write_many; default true
	Append      bool              `json:"append"`       // write
	User        string            `json:"user"`         // write, write_many
	Files       []libbox.FileData `json:"files"`        // write_many (data is base64)
	Depth       int               `json:"depth"`        // list
	Parents     bool              `json:"parents"`      // mkdir
	Recursive   bool              `json:"recursive"`    // remove, watch
	Src         string            `json:"src"`          // rename
	Dst         string            `json:"dst"`          // rename
	Pid         int               `json:"pid"`          // kill
	Signal      int               `json:"signal"`       // kill; 0: SIGKILL
}

func parseFSRequest(what, reqJSON string) (fsRequest, error) {
	var r fsRequest
	if err := decode(what, reqJSON, &r); err != nil {
		return r, err
	}
	if r.Mode > 0o7777 {
		return r, fail(errdefs.InvalidArgument, "%s: mode %#o is more than permission bits", what, r.Mode)
	}
	return r, nil
}

func (r fsRequest) writeOptions() libbox.WriteOptions {
	return libbox.WriteOptions{Mode: libbox.FileModeOf(r.Mode), NoParents: r.MakeParents != nil && !*r.MakeParents, User: r.User}
}

func jsonOf(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", errdefs.Wrap(errdefs.Internal, err, "encode the answer")
	}
	return string(b), nil
}

// FSRead streams a file's bytes (request: path, offset, length) to onData,
// in order from one goroutine, then completes done with {"bytes": n}.
func FSRead(boxH uint64, reqJSON string, onData func([]byte), done Done) error {
	r, err := parseFSRequest("box_fs_read request", reqJSON)
	if err != nil {
		return err
	}
	length := int64(-1)
	if r.Length != nil {
		length = *r.Length
	}
	return boxAsync(boxH, done, "box_fs_read", func(ctx context.Context, b *libbox.Box) (string, error) {
		n, err := b.ReadFileTo(ctx, r.Path, callbackWriter(onData), r.Offset, length)
		if err != nil {
			return "", err
		}
		return jsonOf(map[string]int64{"bytes": n})
	})
}

// FSWrite writes data as one file (request: path, mode, make_parents,
// append, user); done gets {"bytes": n}. data is used before FSWrite
// must not change until done (the C shim passes a copy).
func FSWrite(boxH uint64, reqJSON string, data []byte, done Done) error {
	r, err := parseFSRequest("box_fs_write request", reqJSON)
	if err != nil {
		return err
	}
	return boxAsync(boxH, done, "box_fs_write", func(ctx context.Context, b *libbox.Box) (string, error) {
		var err error
		if r.Append {
			err = b.AppendFile(ctx, r.Path, data, r.writeOptions())
		} else {
			err = b.WriteFile(ctx, r.Path, data, r.writeOptions())
		}
		if err != nil {
			return "", err
		}
		return jsonOf(map[string]int{"bytes": len(data)})
	})
}

// fsCalls are the calls FSCall runs, by name.
var fsCalls = map[string]func(ctx context.Context, b *libbox.Box, r fsRequest) (any, error){
	"write_many": func(ctx context.Context, b *libbox.Box, r fsRequest) (any, error) {
		return map[string]int{"files": len(r.Files)}, b.WriteFiles(ctx, r.Files, r.writeOptions())
	},
	"list": func(ctx context.Context, b *libbox.Box, r fsRequest) (any, error) {
		return b.ListDir(ctx, r.Path, r.Depth)
	},
	"stat": func(ctx context.Context, b *libbox.Box, r fsRequest) (any, error) {
		return b.Stat(ctx, r.Path)
	},
	"exists": func(ctx context.Context, b *libbox.Box, r fsRequest) (any, error) {
		ok, err := b.Exists(ctx, r.Path)
		return map[string]bool{"exists": ok}, err
	},
	"mkdir": func(ctx context.Context, b *libbox.Box, r fsRequest) (any, error) {
		return struct{}{}, b.Mkdir(ctx, r.Path, r.Parents)
	},
	"remove": func(ctx context.Context, b *libbox.Box, r fsRequest) (any, error) {
		return struct{}{}, b.Remove(ctx, r.Path, r.Recursive)
	},
	"rename": func(ctx context.Context, b *libbox.Box, r fsRequest) (any, error) {
		return struct{}{}, b.Rename(ctx, r.Src, r.Dst)
	},
	"stats": func(ctx context.Context, b *libbox.Box, r fsRequest) (any, error) {
		return b.Stats(ctx)
	},
	"processes": func(ctx context.Context, b *libbox.Box, r fsRequest) (any, error) {
		return b.Processes(ctx)
	},
	"kill": func(ctx context.Context, b *libbox.Box, r fsRequest) (any, error) {
		return struct{}{}, b.KillProcess(ctx, r.Pid, syscall.Signal(r.Signal))
	},
}

// FSCall runs one of the calls answering with JSON: write_many, list,
// stat, exists, mkdir, remove, rename, stats, processes, kill.
func FSCall(boxH uint64, op, reqJSON string, done Done) error {
	fn, ok := fsCalls[op]
	if !ok {
		return fail(errdefs.InvalidArgument, "unknown box call %q", op)
	}
	r, err := parseFSRequest("box_"+op+" request", reqJSON)
	if err != nil {
		return err
	}
	return boxAsync(boxH, done, "box_"+op, func(ctx context.Context, b *libbox.Box) (string, error) {
		v, err := fn(ctx, b, r)
		if err != nil {
			return "", err
		}
		return jsonOf(v)
	})
}

// FSWatch starts a watch (request: path, recursive) and returns its
// handle at once. onEvent gets one JSON object per call, in order from one
// goroutine: first {"type":"ready"} once the watch is in place, then the
// events ({"type","path","is_dir"}). done completes exactly once, after
// every onEvent, when the watch ends: status 0 after FSWatchClose or the
// runtime's close, the error when it could not start or the box stopped
// (Unavailable). Release the handle after done.
func FSWatch(boxH uint64, reqJSON string, onEvent func([]byte), done Done) (uint64, error) {
	if done == nil {
		return 0, fail(errdefs.InvalidArgument, "box_fs_watch: the completion callback is NULL")
	}
	r, err := parseFSRequest("box_fs_watch request", reqJSON)
	if err != nil {
		return 0, err
	}
	e, err := lookup(boxH, kindBox)
	if err != nil {
		return 0, err
	}
	re := e.rt
	ctx, cancel := context.WithCancel(re.ctx)
	h := add(&entry{kind: kindWatch, rt: re, cancel: cancel})
	emit := func(v any) {
		if onEvent != nil {
			js, _ := json.Marshal(v)
			onEvent(js)
		}
	}
	re.ops.Add(1)
	go func() {
		defer re.ops.Done()
		defer cancel()
		// Ended by FSWatchClose or the runtime's close: no error.
		end := func(err error) {
			if ctx.Err() != nil && errdefs.IsCanceled(err) {
				err = nil
			}
			st, msg := Status(err)
			done(st, msg, 0, "")
		}
		w, err := e.box.Watch(ctx, r.Path, r.Recursive)
		if err != nil {
			end(err)
			return
		}
		emit(map[string]string{"type": "ready", "path": r.Path})
		for ev := range w.Events() {
			emit(ev)
		}
		end(w.Err())
	}()
	return h, nil
}

// FSWatchClose ends a watch; its done follows. Closing an ended watch does
// nothing.
func FSWatchClose(h uint64) error {
	e, err := lookup(h, kindWatch)
	if err != nil {
		return err
	}
	e.cancel()
	return nil
}
