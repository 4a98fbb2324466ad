package main

// File-system, watch, stats and process shims (see box_fs_* in
// include/libbox.h).

/*
#include "capi.h"
*/
import "C"

import (
	"unsafe"

	"github.com/libbox/libbox/libbox/bridge"
)

// cOutput turns a box_output_fn into a bridge byte callback (nil: none).
func cOutput(fn C.box_output_fn, ud unsafe.Pointer) func([]byte) {
	if fn == nil {
		return nil
	}
	return func(b []byte) {
		C.box_call_output(fn, ud, (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(b))), C.size_t(len(b)))
	}
}

func fsCall(box C.box_t, op string, req *C.char, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return setErr(bridge.FSCall(uint64(box), op, goString(req), cDone(done, ud)), errOut)
}

//export box_fs_read
func box_fs_read(box C.box_t, req *C.char, onData C.box_output_fn, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	if req == nil {
		return nullArg("request_json", errOut)
	}
	return setErr(bridge.FSRead(uint64(box), C.GoString(req), cOutput(onData, ud), cDone(done, ud)), errOut)
}

//export box_fs_write
func box_fs_write(box C.box_t, req *C.char, data *C.uint8_t, n C.size_t, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	if req == nil {
		return nullArg("request_json", errOut)
	}
	if data == nil && n > 0 {
		return nullArg("data", errOut)
	}
	var b []byte
	if n > 0 {
		b = C.GoBytes(unsafe.Pointer(data), C.int(n))
	}
	return setErr(bridge.FSWrite(uint64(box), C.GoString(req), b, cDone(done, ud)), errOut)
}

//export box_fs_write_many
func box_fs_write_many(box C.box_t, req *C.char, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return fsCall(box, "write_many", req, done, ud, errOut)
}

//export box_fs_list
func box_fs_list(box C.box_t, req *C.char, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return fsCall(box, "list", req, done, ud, errOut)
}

//export box_fs_stat
func box_fs_stat(box C.box_t, req *C.char, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return fsCall(box, "stat", req, done, ud, errOut)
}

//export box_fs_exists
func box_fs_exists(box C.box_t, req *C.char, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return fsCall(box, "exists", req, done, ud, errOut)
}

//export box_fs_mkdir
func box_fs_mkdir(box C.box_t, req *C.char, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return fsCall(box, "mkdir", req, done, ud, errOut)
}

//export box_fs_remove
func box_fs_remove(box C.box_t, req *C.char, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return fsCall(box, "remove", req, done, ud, errOut)
}

//export box_fs_rename
func box_fs_rename(box C.box_t, req *C.char, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return fsCall(box, "rename", req, done, ud, errOut)
}

//export box_stats
func box_stats(box C.box_t, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return fsCall(box, "stats", nil, done, ud, errOut)
}

//export box_processes
func box_processes(box C.box_t, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return fsCall(box, "processes", nil, done, ud, errOut)
}

//export box_process_kill
func box_process_kill(box C.box_t, req *C.char, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return fsCall(box, "kill", req, done, ud, errOut)
}

//export box_fs_watch
func box_fs_watch(box C.box_t, req *C.char, onEvent C.box_output_fn, done C.box_complete_fn, ud unsafe.Pointer, out *C.box_watch_t, errOut **C.box_error_t) C.box_status_t {
	if req == nil {
		return nullArg("request_json", errOut)
	}
	if out == nil {
		return nullArg("out", errOut)
	}
	h, err := bridge.FSWatch(uint64(box), C.GoString(req), cOutput(onEvent, ud), cDone(done, ud))
	if err == nil {
		*out = C.box_watch_t(h)
	}
	return setErr(err, errOut)
}

//export box_fs_watch_close
func box_fs_watch_close(w C.box_watch_t, errOut **C.box_error_t) C.box_status_t {
	return setErr(bridge.FSWatchClose(uint64(w)), errOut)
}
