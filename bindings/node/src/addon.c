/*
 * addon.c — the Node-API addon of the libbox Node package.
 *
 * It is a thin bridge between libbox.so (include/libbox.h) and the JavaScript
 * layer in index.js: every exported function maps to one C call, and every
 * callback the library makes on its own threads is copied into a message and
 * handed to the JavaScript thread through one napi_threadsafe_function per
 * Node environment.
 *
 * It must never call into JavaScript from a library thread, never block the
 * JavaScript thread on the library for longer than the header's "blocks
 * briefly", and never keep a library thread waiting except as backpressure on
 * a stream the JavaScript side has paused (bounded per stream, released by
 * resume, discard, flush, a runtime close or the environment's teardown).
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libbox.h"

/* Bytes of one stream of one exec that may sit in the message queue before
 * the library thread delivering them is made to wait. */
#define INFLIGHT_LIMIT (256 * 1024)

enum {
  M_COMPLETE = 1, /* id, status, message, handle, json */
  M_STDOUT = 2,   /* id, buffer -> returns false to pause */
  M_STDERR = 3,
  M_EXIT = 4,     /* id, status, message, exit_code, signal, duration_us, reason */
  M_PROGRESS = 5, /* id, layer, done, total */
  M_DATA = 6,     /* id, buffer: file bytes of a read, or one watch event (JSON) */
};

/* The event queue of one runtime's execs started with execQueued: watched
 * by a uv_poll on the JS thread, which drains it with box_queue_poll. */
typedef struct equeue {
  uv_poll_t poll; /* first: the uv handle's close callback frees the struct */
  napi_env env;
  box_queue_t q;
} equeue;

typedef struct runtime_node {
  box_runtime_t rt;
  equeue *queue; /* NULL until its first queued exec */
  struct runtime_node *next;
} runtime_node;

/* One per Node environment. Never freed: library threads may look at
 * `closing` until every runtime of the environment is closed, and a leaked
 * struct per environment is the price of never reading freed memory. */
typedef struct envstate {
  napi_threadsafe_function tsfn; /* JS thread creates it; Node deletes it at teardown */
  napi_ref mkerr;                /* JS thread only */
  napi_ref dispatch;             /* JS thread only: the JS side's dispatch */
  napi_async_context actx;       /* JS thread only: queue deliveries run in it */
  int closing;                   /* guarded by g_mu */
  runtime_node *runtimes;        /* JS thread only: open runtimes, closed at teardown */
} envstate;

/* One per exec: the user_data of its callbacks. */
typedef struct execctx {
  envstate *st;
  uint32_t id;
  box_runtime_t rt;
  box_t box;
  box_exec_t handle; /* JS thread only; 0 once released */
  /* guarded by g_mu: */
  int refs; /* library (until on_exit), JS external, one per queued message */
  size_t inflight[2];
  int paused[2];
  int discard[2];
  int flush;
  struct execctx *prev, *next;
} execctx;

/* One per asynchronous call with a completion callback. */
typedef struct op {
  envstate *st;
  uint32_t id;
} op;

typedef struct msg {
  int kind;
  uint32_t id;
  execctx *ctx; /* output and exit messages hold a reference */
  int32_t status;
  char *message;
  uint64_t handle;
  char *json;
  char *reason; /* M_EXIT: box_exit_t.reason, or NULL */
  const uint8_t *data;
  size_t len;
  int32_t exit_code, signal;
  int64_t duration_us, done, total;
} msg;

/* g_mu guards every execctx's flow-control fields, the list g_execs and
 * envstate.closing; g_cv is broadcast whenever any of them changes. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static execctx *g_execs; /* guarded by g_mu */

static char *xstrdup(const char *s) {
  if (s == NULL) return NULL;
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

static void ctx_unref_locked(execctx *c) {
  if (--c->refs > 0) return;
  if (c->prev) c->prev->next = c->next; else g_execs = c->next;
  if (c->next) c->next->prev = c->prev;
  free(c);
}

static void ctx_unref(execctx *c) {
  pthread_mutex_lock(&g_mu);
  ctx_unref_locked(c);
  pthread_mutex_unlock(&g_mu);
}

static void free_msg(msg *m) {
  if (m->ctx) ctx_unref(m->ctx);
  free(m->message);
  free(m->json);
  free(m->reason);
  free(m);
}

/* Queues m for the JavaScript thread; frees it when that is impossible. */
static void post(envstate *st, msg *m) {
  if (napi_call_threadsafe_function(st->tsfn, m, napi_tsfn_nonblocking) != napi_ok) {
    if (m->ctx && (m->kind == M_STDOUT || m->kind == M_STDERR)) {
      pthread_mutex_lock(&g_mu);
      m->ctx->inflight[m->kind - M_STDOUT] -= m->len;
      pthread_cond_broadcast(&g_cv);
      pthread_mutex_unlock(&g_mu);
    }
    free_msg(m);
  }
}

static int is_closing(envstate *st) {
  pthread_mutex_lock(&g_mu);
  int c = st->closing;
  pthread_mutex_unlock(&g_mu);
  return c;
}

/* ---- library callbacks (library threads) ---- */

static void on_complete(void *ud, box_status_t status, const char *message,
                        uint64_t handle, const char *json) {
  op *o = ud;
  envstate *st = o->st;
  if (!is_closing(st)) {
    msg *m = calloc(1, sizeof *m);
    if (m) {
      m->kind = M_COMPLETE;
      m->id = o->id;
      m->status = status;
      m->message = xstrdup(message);
      m->handle = handle;
      m->json = xstrdup(json);
      post(st, m);
    }
  }
  free(o);
}

static void on_progress(void *ud, const char *layer, int64_t done, int64_t total) {
  op *o = ud;
  if (is_closing(o->st)) return;
  msg *m = calloc(1, sizeof *m);
  if (!m) return;
  m->kind = M_PROGRESS;
  m->id = o->id;
  m->message = xstrdup(layer);
  m->done = done;
  m->total = total;
  post(o->st, m);
}

static void on_output(execctx *c, int s, const uint8_t *data, size_t len) {
  if (len == 0) return;
  pthread_mutex_lock(&g_mu);
  for (;;) {
    if (c->st->closing || c->discard[s]) {
      pthread_mutex_unlock(&g_mu);
      return;
    }
    if (c->flush || (!c->paused[s] && c->inflight[s] < INFLIGHT_LIMIT)) break;
    pthread_cond_wait(&g_cv, &g_mu); /* backpressure: the JS side paused */
  }
  c->inflight[s] += len;
  c->refs++;
  pthread_mutex_unlock(&g_mu);
  msg *m = malloc(sizeof *m + len);
  if (!m) {
    pthread_mutex_lock(&g_mu);
    c->inflight[s] -= len;
    ctx_unref_locked(c);
    pthread_mutex_unlock(&g_mu);
    return;
  }
  memset(m, 0, sizeof *m);
  m->kind = s == 0 ? M_STDOUT : M_STDERR;
  m->id = c->id;
  m->ctx = c;
  memcpy((uint8_t *)(m + 1), data, len);
  m->data = (const uint8_t *)(m + 1);
  m->len = len;
  post(c->st, m);
}

static void on_stdout(void *ud, const uint8_t *data, size_t len) { on_output(ud, 0, data, len); }
static void on_stderr(void *ud, const uint8_t *data, size_t len) { on_output(ud, 1, data, len); }

static void on_exit_cb(void *ud, const box_exit_t *e) {
  execctx *c = ud;
  if (!is_closing(c->st)) {
    msg *m = calloc(1, sizeof *m);
    if (m) {
      m->kind = M_EXIT;
      m->id = c->id;
      pthread_mutex_lock(&g_mu);
      c->refs++;
      pthread_mutex_unlock(&g_mu);
      m->ctx = c;
      m->status = e->status;
      m->message = xstrdup(e->message);
      m->exit_code = e->exit_code;
      m->signal = e->signal;
      m->duration_us = e->duration_us;
      m->reason = xstrdup(e->reason);
      post(c->st, m);
    }
  }
  ctx_unref(c); /* the library's reference: nothing of this exec comes after */
}

/* ---- helpers (JS thread) ---- */

#define CHECK(call)                                                         \
  do {                                                                      \
    if ((call) != napi_ok) {                                                \
      napi_throw_error(env, "Internal", "libbox addon: " #call " failed"); \
      return NULL;                                                          \
    }                                                                       \
  } while (0)

static envstate *state(napi_env env) {
  envstate *st = NULL;
  napi_get_instance_data(env, (void **)&st);
  return st;
}

/* Throws a LibboxError made by the JS factory registered in init. */
static napi_value throw_status(napi_env env, box_status_t status, const char *message) {
  envstate *st = state(env);
  napi_value fn, args[2], err;
  if (st == NULL || st->mkerr == NULL ||
      napi_get_reference_value(env, st->mkerr, &fn) != napi_ok || fn == NULL) {
    napi_throw_error(env, "Internal", message ? message : "libbox error");
    return NULL;
  }
  napi_value undef;
  napi_get_undefined(env, &undef);
  napi_create_int32(env, status, &args[0]);
  napi_create_string_utf8(env, message ? message : "", NAPI_AUTO_LENGTH, &args[1]);
  if (napi_call_function(env, undef, fn, 2, args, &err) == napi_ok) napi_throw(env, err);
  return NULL;
}

static napi_value throw_err(napi_env env, box_status_t status, box_error_t *err) {
  throw_status(env, status, err ? err->message : "libbox call failed");
  box_error_free(err);
  return NULL;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return 0;
  for (size_t i = argc; i < want; i++) napi_get_undefined(env, &argv[i]);
  return 1;
}

static int get_u64(napi_env env, napi_value v, uint64_t *out) {
  bool lossless;
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t == napi_bigint) return napi_get_value_bigint_uint64(env, v, out, &lossless) == napi_ok;
  if (t == napi_number) {
    int64_t i;
    if (napi_get_value_int64(env, v, &i) != napi_ok || i < 0) return 0;
    *out = (uint64_t)i;
    return 1;
  }
  return 0;
}

/* Returns a malloc'd copy of a JS string, or NULL (and throws a TypeError). */
static char *get_str(napi_env env, napi_value v, const char *what) {
  size_t n;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok) {
    napi_throw_type_error(env, NULL, what);
    return NULL;
  }
  char *s = malloc(n + 1);
  if (!s) return NULL;
  napi_get_value_string_utf8(env, v, s, n + 1, &n);
  return s;
}

static napi_value u64_value(napi_env env, uint64_t v) {
  napi_value r;
  napi_create_bigint_uint64(env, v, &r);
  return r;
}

static napi_value undefined(napi_env env) {
  napi_value r;
  napi_get_undefined(env, &r);
  return r;
}

/* status_result: undefined on success, else the error thrown. */
static napi_value status_result(napi_env env, box_status_t s, box_error_t *err) {
  if (s != BOX_OK) return throw_err(env, s, err);
  return undefined(env);
}

/* settle resolves a promise with value, or rejects it with the error
 * (worker-thread calls, on the JavaScript thread). */
static void settle(napi_env env, napi_deferred d, box_status_t s, box_error_t *err, napi_value value) {
  if (s == BOX_OK) {
    napi_resolve_deferred(env, d, value);
    return;
  }
  throw_err(env, s, err);
  napi_value exc;
  napi_get_and_clear_last_exception(env, &exc);
  napi_reject_deferred(env, d, exc);
}

static napi_value str_or_null(napi_env env, const char *s) {
  napi_value r;
  if (s == NULL) napi_get_null(env, &r);
  else napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &r);
  return r;
}

/* ---- delivery on the JS thread ---- */

/* deliver calls the JS dispatch fn with message m's arguments; returns its
 * result (NULL when it threw: the throw becomes uncaught). */
static napi_value deliver(napi_env env, napi_value fn, const msg *m) {
  napi_value argv[8], undef, result = NULL;
  napi_get_undefined(env, &undef);
  for (int i = 0; i < 8; i++) argv[i] = undef;
  napi_create_int32(env, m->kind, &argv[0]);
  napi_create_uint32(env, m->id, &argv[1]);
  switch (m->kind) {
  case M_COMPLETE:
    napi_create_int32(env, m->status, &argv[2]);
    argv[3] = str_or_null(env, m->message);
    argv[4] = u64_value(env, m->handle);
    argv[5] = str_or_null(env, m->json);
    break;
  case M_STDOUT:
  case M_STDERR:
  case M_DATA:
    napi_create_buffer_copy(env, m->len, m->data, NULL, &argv[2]);
    break;
  case M_EXIT:
    napi_create_int32(env, m->status, &argv[2]);
    argv[3] = str_or_null(env, m->message);
    napi_create_int32(env, m->exit_code, &argv[4]);
    napi_create_int32(env, m->signal, &argv[5]);
    napi_create_int64(env, m->duration_us, &argv[6]);
    argv[7] = str_or_null(env, m->reason);
    break;
  case M_PROGRESS:
    argv[2] = str_or_null(env, m->message);
    napi_create_int64(env, m->done, &argv[3]);
    napi_create_int64(env, m->total, &argv[4]);
    break;
  }
  napi_call_function(env, undef, fn, 8, argv, &result);
  return result;
}

static void call_js(napi_env env, napi_value fn, void *context, void *data) {
  (void)context;
  msg *m = data;
  if (env == NULL || fn == NULL) { /* the environment is going away */
    free_msg(m);
    return;
  }
  napi_value result = deliver(env, fn, m);

  if (m->kind == M_STDOUT || m->kind == M_STDERR) {
    int s = m->kind - M_STDOUT;
    bool more = true;
    napi_valuetype t;
    if (result != NULL && napi_typeof(env, result, &t) == napi_ok && t == napi_boolean)
      napi_get_value_bool(env, result, &more);
    pthread_mutex_lock(&g_mu);
    m->ctx->inflight[s] -= m->len;
    if (!more) m->ctx->paused[s] = 1;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
  } else if (m->kind == M_EXIT && m->ctx->handle != 0) {
    box_release(m->ctx->handle, NULL); /* every exec handle is released after on_exit */
    m->ctx->handle = 0;
  }
  free_msg(m);
}

/* ---- event queues (JS thread) ---- */

static void queue_freed(uv_handle_t *h) { free(h); } /* the equeue starts with its uv_poll_t */

/* queue_drain takes every waiting event of eq; with call, each reaches the
 * JS dispatch (in one callback scope, so promise reactions run after the
 * batch). An exit drops the library's reference; the poll that took it
 * released the exec handle. */
static void queue_drain(equeue *eq, int call) {
  napi_env env = eq->env;
  envstate *st = state(env);
  napi_handle_scope hs = NULL;
  napi_callback_scope cs = NULL;
  napi_value fn = NULL, resource;
  if (call && !is_closing(st) && napi_open_handle_scope(env, &hs) == napi_ok) {
    if (napi_get_reference_value(env, st->dispatch, &fn) != napi_ok || fn == NULL ||
        napi_create_object(env, &resource) != napi_ok ||
        napi_open_callback_scope(env, resource, st->actx, &cs) != napi_ok) {
      fn = NULL;
      cs = NULL;
    }
  }
  box_event_t evs[128];
  for (;;) {
    size_t n = 0;
    if (box_queue_poll(eq->q, evs, 128, &n, NULL) != BOX_OK) break;
    for (size_t i = 0; i < n; i++) {
      execctx *c = (execctx *)(uintptr_t)evs[i].tag;
      msg m;
      memset(&m, 0, sizeof m);
      m.id = c->id;
      if (evs[i].kind == BOX_EVENT_EXIT) {
        const box_exit_t *e = &evs[i].exit;
        m.kind = M_EXIT;
        m.status = e->status;
        m.message = (char *)e->message;
        m.exit_code = e->exit_code;
        m.signal = e->signal;
        m.duration_us = e->duration_us;
        m.reason = (char *)e->reason;
      } else {
        m.kind = evs[i].kind == BOX_EVENT_STDOUT ? M_STDOUT : M_STDERR;
        m.data = evs[i].data;
        m.len = evs[i].len;
      }
      if (m.kind == M_EXIT) c->handle = 0; /* released by this poll (BOX_EXEC_RELEASE_ON_EXIT) */
      if (fn != NULL && (m.kind == M_EXIT || m.len > 0)) {
        napi_handle_scope inner;
        napi_open_handle_scope(env, &inner);
        deliver(env, fn, &m);
        bool thrown = false;
        napi_value exc;
        if (napi_is_exception_pending(env, &thrown) == napi_ok && thrown &&
            napi_get_and_clear_last_exception(env, &exc) == napi_ok)
          napi_fatal_exception(env, exc); /* as an uncaught exception, like a tsfn call */
        napi_close_handle_scope(env, inner);
      }
      if (m.kind == M_EXIT) ctx_unref(c); /* the library's reference: nothing of this exec comes after */
    }
    if (n < 128) break;
  }
  if (cs != NULL) napi_close_callback_scope(env, cs);
  if (hs != NULL) napi_close_handle_scope(env, hs);
}

static void queue_ready(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  queue_drain((equeue *)h, 1);
}

/* runtime_queue: the event queue of runtime rt of this environment, opened
 * on first use; NULL when rt is not one of its open runtimes. */
static equeue *runtime_queue(napi_env env, box_runtime_t rt) {
  runtime_node *n = state(env)->runtimes;
  while (n && n->rt != rt) n = n->next;
  if (n == NULL) return NULL;
  if (n->queue) return n->queue;
  equeue *eq = calloc(1, sizeof *eq);
  uv_loop_t *loop = NULL;
  int32_t fd = -1;
  if (!eq || napi_get_uv_event_loop(env, &loop) != napi_ok || box_queue_open(&eq->q, &fd, NULL) != BOX_OK) {
    free(eq);
    return NULL;
  }
  eq->env = env;
  if (uv_poll_init(loop, &eq->poll, fd) != 0) {
    box_queue_close(eq->q, NULL);
    free(eq);
    return NULL;
  }
  uv_poll_start(&eq->poll, UV_READABLE, queue_ready);
  uv_unref((uv_handle_t *)&eq->poll); /* pending execs hold the loop through the tsfn (ref/unref) */
  n->queue = eq;
  return eq;
}

/* queue_close delivers (with call) or drops what waits, stops watching and
 * closes the queue. Its runtime is closed: every exit is queued already. */
static void queue_close(equeue *eq, int call) {
  if (eq == NULL) return;
  queue_drain(eq, call);
  uv_poll_stop(&eq->poll);
  uv_close((uv_handle_t *)&eq->poll, queue_freed); /* forgets the fd before the queue closes it */
  box_queue_close(eq->q, NULL);
}

/* ---- exported functions ---- */

static void cleanup_hook(void *arg);

/* init(dispatch, makeError): registers the JS side; call once. */
static napi_value js_init(napi_env env, napi_callback_info info) {
  napi_value argv[2], name;
  if (!get_args(env, info, 2, argv)) return NULL;
  envstate *st = state(env);
  if (st->tsfn != NULL) {
    napi_throw_error(env, "Internal", "libbox addon: init called twice");
    return NULL;
  }
  CHECK(napi_create_reference(env, argv[1], 1, &st->mkerr));
  CHECK(napi_create_reference(env, argv[0], 1, &st->dispatch));
  napi_value aname;
  CHECK(napi_create_string_utf8(env, "libbox.exec", NAPI_AUTO_LENGTH, &aname));
  CHECK(napi_async_init(env, NULL, aname, &st->actx));
  CHECK(napi_create_string_utf8(env, "libbox", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, NULL,
                                        call_js, &st->tsfn));
  CHECK(napi_unref_threadsafe_function(env, st->tsfn)); /* idle until something is pending */
  /* Registered after the tsfn so that it runs before Node deletes the tsfn
   * (cleanup hooks run in reverse order). */
  CHECK(napi_add_env_cleanup_hook(env, cleanup_hook, st));
  return undefined(env);
}

/* ref()/unref(): the JS side keeps the event loop alive while work is pending. */
static napi_value js_ref(napi_env env, napi_callback_info info) {
  (void)info;
  CHECK(napi_ref_threadsafe_function(env, state(env)->tsfn));
  return undefined(env);
}

static napi_value js_unref(napi_env env, napi_callback_info info) {
  (void)info;
  CHECK(napi_unref_threadsafe_function(env, state(env)->tsfn));
  return undefined(env);
}

static napi_value js_version(napi_env env, napi_callback_info info) {
  (void)info;
  return str_or_null(env, box_version());
}

static napi_value js_live_handles(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value r;
  napi_create_int64(env, box_live_handles(), &r);
  return r;
}

static napi_value js_runtime_open(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  char *json = get_str(env, argv[0], "options must be a string");
  if (!json) return NULL;
  box_runtime_t rt = 0;
  box_error_t *err = NULL;
  box_status_t s = box_runtime_open(json, &rt, &err);
  free(json);
  if (s != BOX_OK) return throw_err(env, s, err);
  runtime_node *n = malloc(sizeof *n);
  if (n) {
    envstate *st = state(env);
    n->rt = rt;
    n->queue = NULL;
    n->next = st->runtimes;
    st->runtimes = n;
  }
  return u64_value(env, rt);
}

typedef struct close_work {
  napi_async_work work;
  napi_deferred deferred;
  box_runtime_t rt;
  equeue *queue;
  box_status_t status;
  box_error_t *err;
} close_work;

static void close_execute(napi_env env, void *data) {
  (void)env;
  close_work *w = data;
  w->status = box_runtime_close(w->rt, &w->err);
}

static void close_complete(napi_env env, napi_status status, void *data) {
  (void)status;
  close_work *w = data;
  queue_close(w->queue, 1); /* the runtime's last exits reach JS before its close settles */
  settle(env, w->deferred, w->status, w->err, undefined(env));
  napi_delete_async_work(env, w->work);
  free(w);
}

/* Stops holding back output of the runtime's (or box's) execs: their
 * library threads must not wait on the JS side while the library closes. */
static void flush_execs(box_runtime_t rt, box_t box) {
  pthread_mutex_lock(&g_mu);
  for (execctx *c = g_execs; c; c = c->next)
    if ((rt && c->rt == rt) || (box && c->box == box)) c->flush = 1;
  pthread_cond_broadcast(&g_cv);
  pthread_mutex_unlock(&g_mu);
}

/* runtimeClose(rt) -> Promise: box_runtime_close on a worker thread. */
static napi_value js_runtime_close(napi_env env, napi_callback_info info) {
  napi_value argv[1], promise, name;
  if (!get_args(env, info, 1, argv)) return NULL;
  uint64_t rt;
  if (!get_u64(env, argv[0], &rt)) return throw_status(env, BOX_E_INVALID_ARGUMENT, "bad runtime handle");
  envstate *st = state(env);
  equeue *queue = NULL;
  for (runtime_node **p = &st->runtimes; *p; p = &(*p)->next) {
    if ((*p)->rt == rt) {
      runtime_node *n = *p;
      *p = n->next;
      queue = n->queue;
      free(n);
      break;
    }
  }
  flush_execs(rt, 0);
  close_work *w = calloc(1, sizeof *w);
  if (!w) {
    queue_close(queue, 0); /* unreachable in practice; never leave it watched */
    return throw_status(env, BOX_E_INTERNAL, "out of memory");
  }
  w->rt = rt;
  w->queue = queue;
  CHECK(napi_create_promise(env, &w->deferred, &promise));
  CHECK(napi_create_string_utf8(env, "libbox.runtimeClose", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_async_work(env, NULL, name, close_execute, close_complete, w, &w->work));
  CHECK(napi_queue_async_work(env, w->work));
  return promise;
}

/* Closes every runtime of the environment at once, with no more delivery:
 * used when the process exits and when the environment is torn down. */
static void shutdown_env(envstate *st) {
  pthread_mutex_lock(&g_mu);
  st->closing = 1;
  for (execctx *c = g_execs; c; c = c->next)
    if (c->st == st) c->flush = 1;
  pthread_cond_broadcast(&g_cv);
  pthread_mutex_unlock(&g_mu);
  while (st->runtimes) {
    runtime_node *n = st->runtimes;
    st->runtimes = n->next;
    box_runtime_close(n->rt, NULL);
    queue_close(n->queue, 0);
    free(n);
  }
}

static napi_value js_shutdown(napi_env env, napi_callback_info info) {
  (void)info;
  shutdown_env(state(env));
  return undefined(env);
}

static void cleanup_hook(void *arg) { shutdown_env(arg); }

static op *new_op(napi_env env, napi_value id) {
  uint32_t v;
  if (napi_get_value_uint32(env, id, &v) != napi_ok) return NULL;
  op *o = malloc(sizeof *o);
  if (!o) return NULL;
  o->st = state(env);
  o->id = v;
  return o;
}

/* submitted: the result of handing op o to an asynchronous call. When the
 * call refused it, its completion never runs, so o is freed here. */
static napi_value submitted(napi_env env, box_status_t s, op *o, box_error_t *err, napi_value ok) {
  if (s != BOX_OK) {
    free(o);
    return throw_err(env, s, err);
  }
  return ok;
}

typedef box_status_t (*handle_call)(uint64_t, box_error_t **);

/* on_handle(handle): release / pullCancel / fsWatchClose. */
static napi_value on_handle(napi_env env, napi_callback_info info, handle_call call, const char *bad) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  uint64_t h;
  if (!get_u64(env, argv[0], &h)) return throw_status(env, BOX_E_INVALID_ARGUMENT, bad);
  box_error_t *err = NULL;
  return status_result(env, call(h, &err), err);
}

typedef box_status_t (*str_progress_call)(box_runtime_t, const char *, box_progress_fn, box_complete_fn, void *,
                                          box_error_t **);

/* rt_str_progress(rt, str, id): box_create / box_pull; completion M_COMPLETE, progress M_PROGRESS. */
static napi_value rt_str_progress(napi_env env, napi_callback_info info, str_progress_call call, const char *what) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return NULL;
  uint64_t rt;
  if (!get_u64(env, argv[0], &rt)) return throw_status(env, BOX_E_INVALID_ARGUMENT, "bad runtime handle");
  char *str = get_str(env, argv[1], what);
  if (!str) return NULL;
  op *o = new_op(env, argv[2]);
  box_error_t *err = NULL;
  box_status_t s = call(rt, str, on_progress, on_complete, o, &err);
  free(str);
  return submitted(env, s, o, err, undefined(env));
}

/* boxCreate(rt, json, id): completion with the box handle. */
static napi_value js_box_create(napi_env env, napi_callback_info info) {
  return rt_str_progress(env, info, box_create, "options must be a string");
}

/* imagePull(rt, ref, id): completion with the image JSON. */
static napi_value js_image_pull(napi_env env, napi_callback_info info) {
  return rt_str_progress(env, info, box_pull, "ref must be a string");
}

/* imagePullAsync(rt, requestJSON, id) -> pull handle (BigInt; release it
   after the completion); completion M_COMPLETE, progress M_PROGRESS. */
static napi_value js_image_pull_async(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return NULL;
  uint64_t rt;
  if (!get_u64(env, argv[0], &rt)) return throw_status(env, BOX_E_INVALID_ARGUMENT, "bad runtime handle");
  char *req = get_str(env, argv[1], "pull request must be a string");
  if (!req) return NULL;
  op *o = new_op(env, argv[2]);
  box_error_t *err = NULL;
  box_pull_t p = 0;
  box_status_t s = box_pull_async(rt, req, on_progress, on_complete, o, &p, &err);
  free(req);
  return submitted(env, s, o, err, u64_value(env, p));
}

/* pullCancel(pull): stops a pull; its completion then reports Canceled. */
static napi_value js_pull_cancel(napi_env env, napi_callback_info info) {
  return on_handle(env, info, box_pull_cancel, "bad pull handle");
}

/* imagePrune(rt, id): completion with {"roots","blobs","bytes"}. */
static napi_value js_image_prune(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  uint64_t rt;
  if (!get_u64(env, argv[0], &rt)) return throw_status(env, BOX_E_INVALID_ARGUMENT, "bad runtime handle");
  op *o = new_op(env, argv[1]);
  box_error_t *err = NULL;
  box_status_t s = box_image_prune(rt, on_complete, o, &err);
  return submitted(env, s, o, err, undefined(env));
}

/* boxStart(box, id) / boxStop(box, id) */
static napi_value start_stop(napi_env env, napi_callback_info info, int stop) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  uint64_t box;
  if (!get_u64(env, argv[0], &box)) return throw_status(env, BOX_E_INVALID_ARGUMENT, "bad box handle");
  op *o = new_op(env, argv[1]);
  box_error_t *err = NULL;
  if (stop) flush_execs(0, box);
  box_status_t s = stop ? box_stop(box, on_complete, o, &err) : box_start(box, on_complete, o, &err);
  return submitted(env, s, o, err, undefined(env));
}

static napi_value js_box_start(napi_env env, napi_callback_info info) { return start_stop(env, info, 0); }
static napi_value js_box_stop(napi_env env, napi_callback_info info) { return start_stop(env, info, 1); }

typedef box_status_t (*str_force_call)(box_runtime_t, const char *, int32_t, box_complete_fn, void *, box_error_t **);

/* rt_str_force(rt, str, force, id): box_remove / box_image_remove. */
static napi_value rt_str_force(napi_env env, napi_callback_info info, str_force_call call, const char *what) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  uint64_t rt;
  bool force = false;
  if (!get_u64(env, argv[0], &rt)) return throw_status(env, BOX_E_INVALID_ARGUMENT, "bad runtime handle");
  char *str = get_str(env, argv[1], what);
  if (!str) return NULL;
  napi_get_value_bool(env, argv[2], &force);
  op *o = new_op(env, argv[3]);
  box_error_t *err = NULL;
  box_status_t s = call(rt, str, force ? 1 : 0, on_complete, o, &err);
  free(str);
  return submitted(env, s, o, err, undefined(env));
}

/* warm(rt, image, optionsJSON, id): box_warm; completion M_COMPLETE. */
static napi_value js_warm(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  uint64_t rt;
  if (!get_u64(env, argv[0], &rt)) return throw_status(env, BOX_E_INVALID_ARGUMENT, "bad runtime handle");
  char *image = get_str(env, argv[1], "image must be a string");
  if (!image) return NULL;
  char *opts = get_str(env, argv[2], "options must be a string");
  if (!opts) {
    free(image);
    return NULL;
  }
  op *o = new_op(env, argv[3]);
  box_error_t *err = NULL;
  box_status_t s = box_warm(rt, image, opts, on_complete, o, &err);
  free(image);
  free(opts);
  return submitted(env, s, o, err, undefined(env));
}

/* boxRemove(rt, idOrName, force, id) */
static napi_value js_box_remove(napi_env env, napi_callback_info info) {
  return rt_str_force(env, info, box_remove, "idOrName must be a string");
}

/* snapshotRemove(rt, name, force, id) */
static napi_value js_snapshot_remove(napi_env env, napi_callback_info info) {
  return rt_str_force(env, info, box_snapshot_remove, "name must be a string");
}

/* imageRemove(rt, ref, force, id) */
static napi_value js_image_remove(napi_env env, napi_callback_info info) {
  return rt_str_force(env, info, box_image_remove, "ref must be a string");
}

/* copyIn(box, from, to, id) / copyOut(box, from, to, id) */
static napi_value copy(napi_env env, napi_callback_info info, int out) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  uint64_t box;
  if (!get_u64(env, argv[0], &box)) return throw_status(env, BOX_E_INVALID_ARGUMENT, "bad box handle");
  char *from = get_str(env, argv[1], "path must be a string");
  if (!from) return NULL;
  char *to = get_str(env, argv[2], "path must be a string");
  if (!to) {
    free(from);
    return NULL;
  }
  op *o = new_op(env, argv[3]);
  box_error_t *err = NULL;
  box_status_t s = out ? box_copy_out(box, from, to, on_complete, o, &err)
                       : box_copy_in(box, from, to, on_complete, o, &err);
  free(from);
  free(to);
  return submitted(env, s, o, err, undefined(env));
}

static napi_value js_copy_in(napi_env env, napi_callback_info info) { return copy(env, info, 0); }
static napi_value js_copy_out(napi_env env, napi_callback_info info) { return copy(env, info, 1); }

/* boxGet(rt, idOrName) -> handle */
static napi_value js_box_get(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  uint64_t rt;
  if (!get_u64(env, argv[0], &rt)) return throw_status(env, BOX_E_INVALID_ARGUMENT, "bad runtime handle");
  char *name = get_str(env, argv[1], "idOrName must be a string");
  if (!name) return NULL;
  box_t box = 0;
  box_error_t *err = NULL;
  box_status_t s = box_get(rt, name, &box, &err);
  free(name);
  if (s != BOX_OK) return throw_err(env, s, err);
  return u64_value(env, box);
}

typedef box_status_t (*json_call)(uint64_t, char **, box_error_t **);

/* boxList(rt) / boxInfo(box) / images(rt) -> JSON string */
static napi_value json_of(napi_env env, napi_callback_info info, json_call call) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  uint64_t h;
  if (!get_u64(env, argv[0], &h)) return throw_status(env, BOX_E_INVALID_ARGUMENT, "bad handle");
  char *json = NULL;
  box_error_t *err = NULL;
  box_status_t s = call(h, &json, &err);
  if (s != BOX_OK) return throw_err(env, s, err);
  napi_value r = str_or_null(env, json);
  box_string_free(json);
  return r;
}

static napi_value js_box_list(napi_env env, napi_callback_info info) { return json_of(env, info, box_list); }
static napi_value js_box_info(napi_env env, napi_callback_info info) { return json_of(env, info, box_info); }
static napi_value js_images(napi_env env, napi_callback_info info) { return json_of(env, info, box_images); }
static napi_value js_snapshots(napi_env env, napi_callback_info info) { return json_of(env, info, box_snapshots); }

/* release(handle) */
static napi_value js_release(napi_env env, napi_callback_info info) {
  return on_handle(env, info, box_release, "bad handle");
}

static void ctx_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  ctx_unref(data);
}

/* execStart(box, rt, requestJson, id, wantStdout, wantStderr, queued) -> ctx
 * (external). queued: the events come through the runtime's event queue
 * (no flow control: for execs that collect all their output), else through
 * callbacks and the tsfn (paused streams hold the library thread back). */
static napi_value js_exec_start(napi_env env, napi_callback_info info) {
  napi_value argv[7], ext;
  if (!get_args(env, info, 7, argv)) return NULL;
  uint64_t box, rt;
  uint32_t id = 0;
  bool want_out = true, want_err = true, queued = false;
  if (!get_u64(env, argv[0], &box)) return throw_status(env, BOX_E_INVALID_ARGUMENT, "bad box handle");
  if (!get_u64(env, argv[1], &rt)) rt = 0;
  char *json = get_str(env, argv[2], "request must be a string");
  if (!json) return NULL;
  napi_get_value_uint32(env, argv[3], &id);
  napi_get_value_bool(env, argv[4], &want_out);
  napi_get_value_bool(env, argv[5], &want_err);
  napi_get_value_bool(env, argv[6], &queued);
  execctx *c = calloc(1, sizeof *c);
  if (!c) {
    free(json);
    return throw_status(env, BOX_E_INTERNAL, "out of memory");
  }
  c->st = state(env);
  c->id = id;
  c->rt = rt;
  c->box = box;
  c->refs = 2; /* the library's and the JS external's */
  pthread_mutex_lock(&g_mu);
  c->next = g_execs;
  if (g_execs) g_execs->prev = c;
  g_execs = c;
  pthread_mutex_unlock(&g_mu);
  box_exec_t h = 0;
  box_error_t *err = NULL;
  box_status_t s;
  equeue *eq = queued && rt ? runtime_queue(env, rt) : NULL;
  if (eq != NULL) {
    uint32_t flags = BOX_EXEC_RELEASE_ON_EXIT | (want_out ? 0 : BOX_EXEC_DISCARD_STDOUT) |
                     (want_err ? 0 : BOX_EXEC_DISCARD_STDERR);
    s = box_exec_queued(box, json, eq->q, (uint64_t)(uintptr_t)c, flags, &h, &err);
  } else {
    box_exec_callbacks_t cbs = {want_out ? on_stdout : NULL, want_err ? on_stderr : NULL, on_exit_cb};
    s = box_exec_async(box, json, &cbs, c, &h, &err);
  }
  free(json);
  if (s != BOX_OK) {
    pthread_mutex_lock(&g_mu);
    c->refs = 1;
    ctx_unref_locked(c);
    pthread_mutex_unlock(&g_mu);
    return throw_err(env, s, err);
  }
  c->handle = h;
  if (napi_create_external(env, c, ctx_finalize, NULL, &ext) != napi_ok) {
    ctx_unref(c);
    napi_throw_error(env, "Internal", "libbox addon: napi_create_external failed");
    return NULL;
  }
  return ext;
}

static execctx *get_ctx(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok) return NULL;
  return p;
}

/* execFlow(ctx, stream, what): what 0 resume, 1 discard, 2 flush (both). */
static napi_value js_exec_flow(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return NULL;
  execctx *c = get_ctx(env, argv[0]);
  int32_t s = 0, what = 0;
  napi_get_value_int32(env, argv[1], &s);
  napi_get_value_int32(env, argv[2], &what);
  if (!c || s < 0 || s > 1) return throw_status(env, BOX_E_INVALID_ARGUMENT, "bad exec");
  pthread_mutex_lock(&g_mu);
  if (what == 0) c->paused[s] = 0;
  else if (what == 1) c->discard[s] = 1;
  else c->flush = 1;
  pthread_cond_broadcast(&g_cv);
  pthread_mutex_unlock(&g_mu);
  return undefined(env);
}

static box_exec_t live_handle(napi_env env, execctx *c) {
  if (!c) {
    throw_status(env, BOX_E_INVALID_ARGUMENT, "bad exec");
    return 0;
  }
  if (c->handle == 0) throw_status(env, BOX_E_FAILED_PRECONDITION, "the process has exited");
  return c->handle;
}

/* execSignal(ctx, sig) / execCancel(ctx) / execCloseStdin(ctx) / execResize(ctx, rows, cols) */
static napi_value js_exec_signal(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  box_exec_t h = live_handle(env, get_ctx(env, argv[0]));
  if (!h) return NULL;
  int32_t sig = 0;
  napi_get_value_int32(env, argv[1], &sig);
  box_error_t *err = NULL;
  box_status_t s = box_exec_signal(h, sig, &err);
  return status_result(env, s, err);
}

static napi_value js_exec_cancel(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  execctx *c = get_ctx(env, argv[0]);
  if (c == NULL) return throw_status(env, BOX_E_INVALID_ARGUMENT, "bad exec");
  if (c->handle == 0) return undefined(env); /* after the exit it does nothing */
  pthread_mutex_lock(&g_mu);
  c->flush = 1;
  pthread_cond_broadcast(&g_cv);
  pthread_mutex_unlock(&g_mu);
  box_error_t *err = NULL;
  box_status_t s = box_exec_cancel(c->handle, &err);
  return status_result(env, s, err);
}

static napi_value js_exec_close_stdin(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  box_exec_t h = live_handle(env, get_ctx(env, argv[0]));
  if (!h) return NULL;
  box_error_t *err = NULL;
  box_status_t s = box_exec_close_stdin(h, &err);
  return status_result(env, s, err);
}

static napi_value js_exec_resize(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return NULL;
  box_exec_t h = live_handle(env, get_ctx(env, argv[0]));
  if (!h) return NULL;
  uint32_t rows = 0, cols = 0;
  napi_get_value_uint32(env, argv[1], &rows);
  napi_get_value_uint32(env, argv[2], &cols);
  box_error_t *err = NULL;
  box_status_t s = box_exec_resize(h, rows, cols, &err);
  return status_result(env, s, err);
}

typedef struct write_work {
  napi_async_work work;
  napi_deferred deferred;
  box_exec_t handle;
  uint8_t *data;
  size_t len;
  box_status_t status;
  box_error_t *err;
} write_work;

static void write_execute(napi_env env, void *data) {
  (void)env;
  write_work *w = data;
  w->status = box_exec_write_stdin(w->handle, w->data, w->len, &w->err);
}

static void write_complete(napi_env env, napi_status status, void *data) {
  (void)status;
  write_work *w = data;
  settle(env, w->deferred, w->status, w->err, undefined(env));
  napi_delete_async_work(env, w->work);
  free(w->data);
  free(w);
}

/* execWrite(ctx, buffer) -> Promise: box_exec_write_stdin may wait for room
 * in the box, so it runs on a worker thread with a copy of the bytes. */
static napi_value js_exec_write(napi_env env, napi_callback_info info) {
  napi_value argv[2], promise, name;
  if (!get_args(env, info, 2, argv)) return NULL;
  box_exec_t h = live_handle(env, get_ctx(env, argv[0]));
  if (!h) return NULL;
  void *data;
  size_t len;
  bool is_buf = false;
  napi_is_buffer(env, argv[1], &is_buf);
  if (!is_buf || napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "data must be a Buffer");
    return NULL;
  }
  write_work *w = calloc(1, sizeof *w);
  if (!w) return throw_status(env, BOX_E_INTERNAL, "out of memory");
  w->handle = h;
  w->len = len;
  w->data = malloc(len ? len : 1);
  if (!w->data) {
    free(w);
    return throw_status(env, BOX_E_INTERNAL, "out of memory");
  }
  memcpy(w->data, data, len);
  CHECK(napi_create_promise(env, &w->deferred, &promise));
  CHECK(napi_create_string_utf8(env, "libbox.execWrite", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_async_work(env, NULL, name, write_execute, write_complete, w, &w->work));
  CHECK(napi_queue_async_work(env, w->work));
  return promise;
}

typedef struct doctor_work {
  napi_async_work work;
  napi_deferred deferred;
  char *opts;
  char *json;
  box_status_t status;
  box_error_t *err;
} doctor_work;

static void doctor_execute(napi_env env, void *data) {
  (void)env;
  doctor_work *w = data;
  w->status = box_doctor(w->opts, &w->json, &w->err);
}

static void doctor_complete(napi_env env, napi_status status, void *data) {
  (void)status;
  doctor_work *w = data;
  settle(env, w->deferred, w->status, w->err, str_or_null(env, w->json));
  napi_delete_async_work(env, w->work);
  box_string_free(w->json);
  free(w->opts);
  free(w);
}

/* doctor(optionsJson) -> Promise<string>: the host checks take up to a few
 * seconds (a QEMU --version, a user namespace), so they run on a worker. */
static napi_value js_doctor(napi_env env, napi_callback_info info) {
  napi_value argv[1], promise, name;
  if (!get_args(env, info, 1, argv)) return NULL;
  doctor_work *w = calloc(1, sizeof *w);
  if (!w) return throw_status(env, BOX_E_INTERNAL, "out of memory");
  w->opts = get_str(env, argv[0], "options must be a JSON string");
  if (!w->opts) {
    free(w);
    return NULL;
  }
  CHECK(napi_create_promise(env, &w->deferred, &promise));
  CHECK(napi_create_string_utf8(env, "libbox.doctor", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_async_work(env, NULL, name, doctor_execute, doctor_complete, w, &w->work));
  CHECK(napi_queue_async_work(env, w->work));
  return promise;
}

/* ---- files, watches, stats, processes, published ports ---- */

/* Bytes of a read or one watch event (library thread). The op stays valid:
 * its completion, which frees it, comes after every data callback. */
static void on_fs_data(void *ud, const uint8_t *data, size_t len) {
  op *o = ud;
  if (len == 0 || is_closing(o->st)) return;
  msg *m = malloc(sizeof *m + len);
  if (!m) return;
  memset(m, 0, sizeof *m);
  m->kind = M_DATA;
  m->id = o->id;
  memcpy((uint8_t *)(m + 1), data, len);
  m->data = (const uint8_t *)(m + 1);
  m->len = len;
  post(o->st, m);
}

typedef box_status_t (*fs_json_call)(box_t, const char *, box_complete_fn, void *, box_error_t **);
typedef box_status_t (*box_only_call)(box_t, box_complete_fn, void *, box_error_t **);

/* fsCall(box, name, requestJSON, id): the calls answering with JSON. */
static napi_value js_fs_call(napi_env env, napi_callback_info info) {
  static const struct {
    const char *name;
    fs_json_call fn;
    box_only_call plain;
  } calls[] = {
      {"write_many", box_fs_write_many, NULL}, {"list", box_fs_list, NULL},
      {"stat", box_fs_stat, NULL},             {"exists", box_fs_exists, NULL},
      {"mkdir", box_fs_mkdir, NULL},           {"remove", box_fs_remove, NULL},
      {"rename", box_fs_rename, NULL},         {"kill", box_process_kill, NULL},
      {"stats", NULL, box_stats},              {"processes", NULL, box_processes},
      {"snapshot", box_snapshot, NULL},        {"restore", box_restore, NULL},
      {"export", box_export, NULL},
      {"publish", box_publish, NULL},          {"unpublish", box_unpublish, NULL},
  };
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  uint64_t box;
  if (!get_u64(env, argv[0], &box)) return throw_status(env, BOX_E_INVALID_ARGUMENT, "bad box handle");
  char *name = get_str(env, argv[1], "call name must be a string");
  if (!name) return NULL;
  char *req = get_str(env, argv[2], "request must be a string");
  if (!req) {
    free(name);
    return NULL;
  }
  box_status_t s = BOX_E_INVALID_ARGUMENT;
  box_error_t *err = NULL;
  op *o = new_op(env, argv[3]);
  int found = 0;
  for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
    if (strcmp(calls[i].name, name) != 0) continue;
    found = 1;
    s = calls[i].fn ? calls[i].fn(box, req, on_complete, o, &err) : calls[i].plain(box, on_complete, o, &err);
    break;
  }
  free(name);
  free(req);
  if (!found) {
    free(o);
    return throw_status(env, BOX_E_INVALID_ARGUMENT, "unknown call");
  }
  return submitted(env, s, o, err, undefined(env));
}

/* stream_args parses (box, requestJSON, id) of fsRead and fsWatch; the
 * caller frees *req and, when the call fails, *o. */
static int stream_args(napi_env env, napi_callback_info info, uint64_t *box, char **req, op **o) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return 0;
  if (!get_u64(env, argv[0], box)) {
    throw_status(env, BOX_E_INVALID_ARGUMENT, "bad box handle");
    return 0;
  }
  *req = get_str(env, argv[1], "request must be a string");
  if (!*req) return 0;
  *o = new_op(env, argv[2]);
  return 1;
}

/* fsRead(box, requestJSON, id): bytes as M_DATA, then M_COMPLETE. */
static napi_value js_fs_read(napi_env env, napi_callback_info info) {
  uint64_t box;
  char *req;
  op *o;
  if (!stream_args(env, info, &box, &req, &o)) return NULL;
  box_error_t *err = NULL;
  box_status_t s = box_fs_read(box, req, on_fs_data, on_complete, o, &err);
  free(req);
  return submitted(env, s, o, err, undefined(env));
}

/* fsWrite(box, requestJSON, buffer, id) */
static napi_value js_fs_write(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  uint64_t box;
  if (!get_u64(env, argv[0], &box)) return throw_status(env, BOX_E_INVALID_ARGUMENT, "bad box handle");
  void *data = NULL;
  size_t len = 0;
  if (napi_get_buffer_info(env, argv[2], &data, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "data must be a Buffer");
    return NULL;
  }
  char *req = get_str(env, argv[1], "request must be a string");
  if (!req) return NULL;
  op *o = new_op(env, argv[3]);
  box_error_t *err = NULL;
  box_status_t s = box_fs_write(box, req, data, len, on_complete, o, &err); /* data is copied */
  free(req);
  return submitted(env, s, o, err, undefined(env));
}

/* fsWatch(box, requestJSON, id) -> handle: events as M_DATA, end as M_COMPLETE. */
static napi_value js_fs_watch(napi_env env, napi_callback_info info) {
  uint64_t box;
  char *req;
  op *o;
  if (!stream_args(env, info, &box, &req, &o)) return NULL;
  box_error_t *err = NULL;
  box_watch_t w = 0;
  box_status_t s = box_fs_watch(box, req, on_fs_data, on_complete, o, &w, &err);
  free(req);
  return submitted(env, s, o, err, u64_value(env, w));
}

/* fsWatchClose(handle) */
static napi_value js_fs_watch_close(napi_env env, napi_callback_info info) {
  return on_handle(env, info, box_fs_watch_close, "bad watch handle");
}

static napi_value init_module(napi_env env, napi_value exports) {
  uint32_t abi = box_abi_version();
  if (abi != LIBBOX_ABI_VERSION) {
    char buf[256];
    snprintf(buf, sizeof buf,
             "libbox.so has ABI version %u but this addon was built for %u: "
             "reinstall the libbox package (its libbox.so and addon must come from one build)",
             abi, (unsigned)LIBBOX_ABI_VERSION);
    napi_throw_error(env, "Unsupported", buf);
    return NULL;
  }
  envstate *st = calloc(1, sizeof *st);
  if (!st) return NULL;
  napi_set_instance_data(env, st, NULL, NULL); /* never freed: see envstate */

  napi_property_descriptor props[] = {
#define FN(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_default, NULL}
      FN("init", js_init),
      FN("ref", js_ref),
      FN("unref", js_unref),
      FN("version", js_version),
      FN("liveHandles", js_live_handles),
      FN("runtimeOpen", js_runtime_open),
      FN("runtimeClose", js_runtime_close),
      FN("shutdown", js_shutdown),
      FN("boxCreate", js_box_create),
      FN("boxGet", js_box_get),
      FN("boxList", js_box_list),
      FN("boxInfo", js_box_info),
      FN("boxStart", js_box_start),
      FN("boxStop", js_box_stop),
      FN("boxRemove", js_box_remove),
      FN("imagePull", js_image_pull),
      FN("imageRemove", js_image_remove),
      FN("warm", js_warm),
      FN("imagePullAsync", js_image_pull_async),
      FN("pullCancel", js_pull_cancel),
      FN("imagePrune", js_image_prune),
      FN("images", js_images),
      FN("snapshots", js_snapshots),
      FN("snapshotRemove", js_snapshot_remove),
      FN("doctor", js_doctor),
      FN("copyIn", js_copy_in),
      FN("copyOut", js_copy_out),
      FN("release", js_release),
      FN("execStart", js_exec_start),
      FN("execFlow", js_exec_flow),
      FN("execSignal", js_exec_signal),
      FN("execCancel", js_exec_cancel),
      FN("execCloseStdin", js_exec_close_stdin),
      FN("execResize", js_exec_resize),
      FN("execWrite", js_exec_write),
      FN("fsCall", js_fs_call),
      FN("fsRead", js_fs_read),
      FN("fsWrite", js_fs_write),
      FN("fsWatch", js_fs_watch),
      FN("fsWatchClose", js_fs_watch_close),
#undef FN
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  napi_value v;
  napi_create_uint32(env, abi, &v);
  napi_set_named_property(env, exports, "abiVersion", v);
  return exports;
}

NAPI_MODULE_INIT() { return init_module(env, exports); }
