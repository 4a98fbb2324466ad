package main

// Snapshot, restore and export shims (see box_snapshot in include/libbox.h).

/*
#include "capi.h"
*/
import "C"

import (
	"unsafe"

	"github.com/libbox/libbox/libbox/bridge"
)

//export box_snapshot
func box_snapshot(box C.box_t, req *C.char, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return boxStringCall(bridge.Snapshot, box, req, "request_json", done, ud, errOut)
}

//export box_snapshots
func box_snapshots(rt C.box_runtime_t, out **C.char, errOut **C.box_error_t) C.box_status_t {
	if out == nil {
		return nullArg("out_json", errOut)
	}
	js, err := bridge.Snapshots(uint64(rt))
	if err == nil {
		*out = C.CString(js)
	}
	return setErr(err, errOut)
}

//export box_snapshot_remove
func box_snapshot_remove(rt C.box_runtime_t, name *C.char, force C.int32_t, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	if name == nil {
		return nullArg("name", errOut)
	}
	return setErr(bridge.RemoveSnapshot(uint64(rt), C.GoString(name), force != 0, cDone(done, ud)), errOut)
}

//export box_restore
func box_restore(box C.box_t, name *C.char, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return boxStringCall(bridge.Restore, box, name, "snapshot", done, ud, errOut)
}

//export box_export
func box_export(box C.box_t, dir *C.char, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return boxStringCall(bridge.Export, box, dir, "dir", done, ud, errOut)
}
