// Command capi is libbox.so: //export shims over libbox/bridge and nothing
// else. It converts C types, calls C function pointers through the
// trampolines in trampolines.c, and never keeps a Go pointer in C memory.
// The header shipped is include/libbox.h (written by hand), not cgo's.
package main

/*
#cgo CFLAGS: -O2
#include "capi.h"
*/
import "C"

import (
	"unsafe"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox"
	"github.com/libbox/libbox/libbox/bridge"
)

func main() {}

var cVersion = C.CString(libbox.Version)

// setErr stores err in *out (when out is non-NULL) and returns its status.
func setErr(err error, out **C.box_error_t) C.box_status_t {
	st, msg := bridge.Status(err)
	if out != nil {
		*out = nil
		if err != nil {
			e := (*C.box_error_t)(C.malloc(C.size_t(unsafe.Sizeof(C.box_error_t{}))))
			e.code = C.box_status_t(st)
			e.message = C.CString(msg)
			*out = e
		}
	}
	return C.box_status_t(st)
}

func nullArg(name string, out **C.box_error_t) C.box_status_t {
	return setErr(errdefs.New(errdefs.InvalidArgument, "%s must not be NULL", name), out)
}

func goString(s *C.char) string {
	if s == nil {
		return ""
	}
	return C.GoString(s)
}

// boxStringCall is the shape of the asynchronous box calls taking one string
// (a request or a name) that must not be NULL.
func boxStringCall(call func(uint64, string, bridge.Done) error, box C.box_t, s *C.char, what string, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	if s == nil {
		return nullArg(what, errOut)
	}
	return setErr(call(uint64(box), C.GoString(s), cDone(done, ud)), errOut)
}

func cDone(fn C.box_complete_fn, ud unsafe.Pointer) bridge.Done {
	if fn == nil {
		return nil
	}
	return func(st int32, msg string, h uint64, js string) {
		var cmsg, cjs *C.char
		if st != 0 {
			cmsg = C.CString(msg)
			defer C.free(unsafe.Pointer(cmsg))
		}
		if js != "" {
			cjs = C.CString(js)
			defer C.free(unsafe.Pointer(cjs))
		}
		C.box_call_complete(fn, ud, C.box_status_t(st), cmsg, C.uint64_t(h), cjs)
	}
}

func cProgress(fn C.box_progress_fn, ud unsafe.Pointer) bridge.Progress {
	if fn == nil {
		return nil
	}
	return func(layer string, d, total int64) {
		cl := C.CString(layer)
		defer C.free(unsafe.Pointer(cl))
		C.box_call_progress(fn, ud, cl, C.int64_t(d), C.int64_t(total))
	}
}

//export box_abi_version
func box_abi_version() C.uint32_t { return C.uint32_t(bridge.ABIVersion) }

//export box_version
func box_version() *C.char { return cVersion }

//export box_live_handles
func box_live_handles() C.int64_t { return C.int64_t(bridge.LiveHandles()) }

//export box_runtime_open
func box_runtime_open(opts *C.char, out *C.box_runtime_t, errOut **C.box_error_t) C.box_status_t {
	if out == nil {
		return nullArg("out", errOut)
	}
	h, err := bridge.RuntimeOpen(goString(opts))
	if err == nil {
		*out = C.box_runtime_t(h)
	}
	return setErr(err, errOut)
}

//export box_runtime_close
func box_runtime_close(rt C.box_runtime_t, errOut **C.box_error_t) C.box_status_t {
	return setErr(bridge.RuntimeClose(uint64(rt)), errOut)
}

//export box_create
func box_create(rt C.box_runtime_t, opts *C.char, progress C.box_progress_fn, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return setErr(bridge.Create(uint64(rt), goString(opts), cProgress(progress, ud), cDone(done, ud)), errOut)
}

//export box_get
func box_get(rt C.box_runtime_t, idOrName *C.char, out *C.box_t, errOut **C.box_error_t) C.box_status_t {
	if idOrName == nil {
		return nullArg("id_or_name", errOut)
	}
	if out == nil {
		return nullArg("out", errOut)
	}
	h, err := bridge.Get(uint64(rt), C.GoString(idOrName))
	if err == nil {
		*out = C.box_t(h)
	}
	return setErr(err, errOut)
}

//export box_list
func box_list(rt C.box_runtime_t, out **C.char, errOut **C.box_error_t) C.box_status_t {
	if out == nil {
		return nullArg("out_json", errOut)
	}
	js, err := bridge.List(uint64(rt))
	if err == nil {
		*out = C.CString(js)
	}
	return setErr(err, errOut)
}

//export box_info
func box_info(box C.box_t, out **C.char, errOut **C.box_error_t) C.box_status_t {
	if out == nil {
		return nullArg("out_json", errOut)
	}
	js, err := bridge.Info(uint64(box))
	if err == nil {
		*out = C.CString(js)
	}
	return setErr(err, errOut)
}

//export box_start
func box_start(box C.box_t, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return setErr(bridge.Start(uint64(box), cDone(done, ud)), errOut)
}

//export box_stop
func box_stop(box C.box_t, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return setErr(bridge.Stop(uint64(box), cDone(done, ud)), errOut)
}

//export box_remove
func box_remove(rt C.box_runtime_t, idOrName *C.char, force C.int32_t, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	if idOrName == nil {
		return nullArg("id_or_name", errOut)
	}
	return setErr(bridge.Remove(uint64(rt), C.GoString(idOrName), force != 0, cDone(done, ud)), errOut)
}

//export box_exec_async
func box_exec_async(box C.box_t, req *C.char, cbs *C.box_exec_callbacks_t, ud unsafe.Pointer, out *C.box_exec_t, errOut **C.box_error_t) C.box_status_t {
	if req == nil {
		return nullArg("request_json", errOut)
	}
	if out == nil {
		return nullArg("out", errOut)
	}
	var gcb bridge.ExecCallbacks
	if cbs != nil {
		onOut, onErr, onExit := cbs.on_stdout, cbs.on_stderr, cbs.on_exit
		if onOut != nil {
			gcb.Stdout = func(b []byte) {
				C.box_call_output(onOut, ud, (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(b))), C.size_t(len(b)))
			}
		}
		if onErr != nil {
			gcb.Stderr = func(b []byte) {
				C.box_call_output(onErr, ud, (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(b))), C.size_t(len(b)))
			}
		}
		if onExit != nil {
			gcb.Exit = func(e bridge.ExitInfo) {
				var msg, reason *C.char
				if e.Status != 0 {
					msg = C.CString(e.Message)
					defer C.free(unsafe.Pointer(msg))
				}
				if e.Reason != "" {
					reason = C.CString(e.Reason)
					defer C.free(unsafe.Pointer(reason))
				}
				C.box_call_exit(onExit, ud, C.box_status_t(e.Status), C.int32_t(e.ExitCode), C.int32_t(e.Signal), C.int64_t(e.Duration.Microseconds()), msg, reason)
			}
		}
	}
	h, err := bridge.Exec(uint64(box), C.GoString(req), gcb)
	if err == nil {
		*out = C.box_exec_t(h)
	}
	return setErr(err, errOut)
}

//export box_exec_write_stdin
func box_exec_write_stdin(ex C.box_exec_t, data *C.uint8_t, n C.size_t, errOut **C.box_error_t) C.box_status_t {
	if data == nil && n > 0 {
		return nullArg("data", errOut)
	}
	var b []byte
	if n > 0 {
		b = C.GoBytes(unsafe.Pointer(data), C.int(n))
	}
	return setErr(bridge.WriteStdin(uint64(ex), b), errOut)
}

//export box_exec_close_stdin
func box_exec_close_stdin(ex C.box_exec_t, errOut **C.box_error_t) C.box_status_t {
	return setErr(bridge.CloseStdin(uint64(ex)), errOut)
}

//export box_exec_signal
func box_exec_signal(ex C.box_exec_t, sig C.int32_t, errOut **C.box_error_t) C.box_status_t {
	return setErr(bridge.Signal(uint64(ex), int32(sig)), errOut)
}

//export box_exec_resize
func box_exec_resize(ex C.box_exec_t, rows, cols C.uint32_t, errOut **C.box_error_t) C.box_status_t {
	return setErr(bridge.Resize(uint64(ex), uint32(rows), uint32(cols)), errOut)
}

//export box_exec_cancel
func box_exec_cancel(ex C.box_exec_t, errOut **C.box_error_t) C.box_status_t {
	return setErr(bridge.Cancel(uint64(ex)), errOut)
}

//export box_copy_in
func box_copy_in(box C.box_t, host, boxPath *C.char, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	if host == nil || boxPath == nil {
		return nullArg("host_path and box_path", errOut)
	}
	return setErr(bridge.CopyIn(uint64(box), C.GoString(host), C.GoString(boxPath), cDone(done, ud)), errOut)
}

//export box_copy_out
func box_copy_out(box C.box_t, boxPath, host *C.char, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	if host == nil || boxPath == nil {
		return nullArg("box_path and host_path", errOut)
	}
	return setErr(bridge.CopyOut(uint64(box), C.GoString(boxPath), C.GoString(host), cDone(done, ud)), errOut)
}

//export box_release
func box_release(h C.uint64_t, errOut **C.box_error_t) C.box_status_t {
	return setErr(bridge.Release(uint64(h)), errOut)
}

//export box_string_free
func box_string_free(s *C.char) {
	if s != nil {
		C.free(unsafe.Pointer(s))
	}
}

//export box_error_free
func box_error_free(e *C.box_error_t) {
	if e == nil {
		return
	}
	if e.message != nil {
		C.free(unsafe.Pointer(e.message))
	}
	C.free(unsafe.Pointer(e))
}

//export box_pull
func box_pull(rt C.box_runtime_t, ref *C.char, progress C.box_progress_fn, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	if ref == nil {
		return nullArg("ref", errOut)
	}
	return setErr(bridge.Pull(uint64(rt), C.GoString(ref), cProgress(progress, ud), cDone(done, ud)), errOut)
}

//export box_warm
func box_warm(rt C.box_runtime_t, image *C.char, opts *C.char, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	if image == nil {
		return nullArg("image", errOut)
	}
	return setErr(bridge.Warm(uint64(rt), C.GoString(image), goString(opts), cDone(done, ud)), errOut)
}

//export box_pull_async
func box_pull_async(rt C.box_runtime_t, req *C.char, progress C.box_progress_fn, done C.box_complete_fn, ud unsafe.Pointer,
	out *C.box_pull_t, errOut **C.box_error_t) C.box_status_t {
	if req == nil {
		return nullArg("request_json", errOut)
	}
	if out == nil {
		return nullArg("out", errOut)
	}
	h, err := bridge.PullAsync(uint64(rt), C.GoString(req), cProgress(progress, ud), cDone(done, ud))
	if err == nil {
		*out = C.box_pull_t(h)
	}
	return setErr(err, errOut)
}

//export box_pull_cancel
func box_pull_cancel(p C.box_pull_t, errOut **C.box_error_t) C.box_status_t {
	return setErr(bridge.PullCancel(uint64(p)), errOut)
}

//export box_image_prune
func box_image_prune(rt C.box_runtime_t, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	return setErr(bridge.PruneImages(uint64(rt), cDone(done, ud)), errOut)
}

//export box_images
func box_images(rt C.box_runtime_t, out **C.char, errOut **C.box_error_t) C.box_status_t {
	if out == nil {
		return nullArg("out_json", errOut)
	}
	js, err := bridge.Images(uint64(rt))
	if err == nil {
		*out = C.CString(js)
	}
	return setErr(err, errOut)
}

//export box_doctor
func box_doctor(opts *C.char, out **C.char, errOut **C.box_error_t) C.box_status_t {
	if out == nil {
		return nullArg("out_json", errOut)
	}
	js, err := bridge.Doctor(goString(opts))
	if err == nil {
		*out = C.CString(js)
	}
	return setErr(err, errOut)
}

//export box_image_remove
func box_image_remove(rt C.box_runtime_t, ref *C.char, force C.int32_t, done C.box_complete_fn, ud unsafe.Pointer, errOut **C.box_error_t) C.box_status_t {
	if ref == nil {
		return nullArg("ref", errOut)
	}
	return setErr(bridge.RemoveImage(uint64(rt), C.GoString(ref), force != 0, cDone(done, ud)), errOut)
}
