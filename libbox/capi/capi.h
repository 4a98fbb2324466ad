// Declarations shared by the cgo shims and the C trampolines.
#ifndef LIBBOX_CAPI_H
#define LIBBOX_CAPI_H
#include <stdlib.h>
#define LIBBOX_TYPES_ONLY
#include "../../include/libbox.h"

void box_call_complete(box_complete_fn fn, void *ud, box_status_t st, const char *msg, uint64_t h, const char *json);
void box_call_progress(box_progress_fn fn, void *ud, const char *layer, int64_t done, int64_t total);
void box_call_output(box_output_fn fn, void *ud, const uint8_t *data, size_t len);
void box_call_exit(box_exit_fn fn, void *ud, box_status_t st, int32_t code, int32_t sig, int64_t dur, const char *msg, const char *reason);
#endif
