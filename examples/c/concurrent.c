/* The seed pattern through the C ABI: 4 concurrent `echo task X` in one
   box via box_exec_async, waiting on callbacks, then printing results.
   Build: cc concurrent.c $(pkg-config --cflags --libs libbox) -lpthread */
#include <libbox.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

struct done { int fired; box_status_t status; uint64_t handle; char msg[512]; };
struct task { char out[256]; size_t len; int exited; box_exit_t exit; char err[256]; };

static void on_done(void *ud, box_status_t st, const char *msg, uint64_t h, const char *json) {
  struct done *d = ud;
  (void)json;
  pthread_mutex_lock(&mu);
  d->status = st;
  d->handle = h;
  if (msg) snprintf(d->msg, sizeof d->msg, "%s", msg);
  d->fired = 1;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
}

static void on_stdout(void *ud, const uint8_t *data, size_t len) {
  struct task *t = ud; /* output callbacks of one exec never overlap */
  if (t->len + len < sizeof t->out) { memcpy(t->out + t->len, data, len); t->len += len; }
}

static void on_exit_cb(void *ud, const box_exit_t *e) {
  struct task *t = ud;
  pthread_mutex_lock(&mu);
  t->exit = *e;
  if (e->message) snprintf(t->err, sizeof t->err, "%s", e->message);
  t->exited = 1;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
}

static void wait_done(struct done *d) {
  pthread_mutex_lock(&mu);
  while (!d->fired) pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
}

static int check(box_status_t st, box_error_t *err, const char *what) {
  if (st == BOX_OK) return 0;
  fprintf(stderr, "%s: %d %s\n", what, st, err ? err->message : "");
  box_error_free(err);
  return 1;
}

int main(void) {
  box_error_t *err = NULL;
  box_runtime_t rt;
  const char *iso = getenv("LIBBOX_ISOLATION") ? getenv("LIBBOX_ISOLATION") : "sandbox";
  char opts[256];
  if (box_abi_version() != LIBBOX_ABI_VERSION) { fprintf(stderr, "ABI mismatch\n"); return 1; }
  if (check(box_runtime_open(NULL, &rt, &err), err, "open")) return 1;
  snprintf(opts, sizeof opts, "{\"image\": \"busybox\", \"isolation\": \"%s\", \"auto_remove\": true}", iso);
  struct done created = {0}, started = {0}, stopped = {0};
  if (check(box_create(rt, opts, NULL, on_done, &created, &err), err, "create")) return 1;
  wait_done(&created);
  if (created.status != BOX_OK) { fprintf(stderr, "create: %s\n", created.msg); return 1; }
  box_t box = created.handle;
  if (check(box_start(box, on_done, &started, &err), err, "start")) return 1;
  wait_done(&started);
  if (started.status != BOX_OK) { fprintf(stderr, "start: %s\n", started.msg); return 1; }

  const char *names[] = {"A", "B", "C", "D"};
  struct task tasks[4] = {0};
  box_exec_t ex[4];
  box_exec_callbacks_t cbs = {on_stdout, NULL, on_exit_cb};
  for (int i = 0; i < 4; i++) {
    char req[128];
    snprintf(req, sizeof req, "{\"args\": [\"echo\", \"task %s\"]}", names[i]);
    if (check(box_exec_async(box, req, &cbs, &tasks[i], &ex[i], &err), err, "exec")) return 1;
  }
  pthread_mutex_lock(&mu);
  for (int i = 0; i < 4; i++) while (!tasks[i].exited) pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  int rc = 0;
  for (int i = 0; i < 4; i++) {
    printf("exit=%d stdout=%.*s", tasks[i].exit.exit_code, (int)tasks[i].len, tasks[i].out);
    if (tasks[i].exit.status != BOX_OK || tasks[i].exit.exit_code != 0) rc = 1;
    box_release(ex[i], NULL);
  }
  box_stop(box, on_done, &stopped, NULL);
  wait_done(&stopped);
  box_release(box, NULL);
  box_runtime_close(rt, NULL);
  return rc;
}
