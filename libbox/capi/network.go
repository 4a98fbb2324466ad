package main

// Published-port shims (see box_publish in include/libbox.h).

/*
#include "capi.h"
*/
import "C"

import (
	"unsafe"

	"github.com/libbox/libbox/libbox/bridge"
)

//export box_publish
func box_publish(box C.box_t, req *C.char, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return boxStringCall(bridge.Publish, box, req, "mapping_json", done, ud, errOut)
}

//export box_unpublish
func box_unpublish(box C.box_t, req *C.char, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return boxStringCall(bridge.Unpublish, box, req, "mapping_json", done, ud, errOut)
}
