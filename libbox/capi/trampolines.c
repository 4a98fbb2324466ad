// C trampolines: Go cannot call C function pointers directly.
#include "capi.h"

void box_call_complete(box_complete_fn fn, void *ud, box_status_t st, const char *msg, uint64_t h, const char *json) {
  fn(ud, st, msg, h, json);
}

void box_call_progress(box_progress_fn fn, void *ud, const char *layer, int64_t done, int64_t total) {
  fn(ud, layer, done, total);
}

void box_call_output(box_output_fn fn, void *ud, const uint8_t *data, size_t len) {
  fn(ud, data, len);
}

void box_call_exit(box_exit_fn fn, void *ud, box_status_t st, int32_t code, int32_t sig, int64_t dur, const char *msg, const char *reason) {
  box_exit_t e = {st, code, sig, dur, msg, reason};
  fn(ud, &e);
}
