/* Sequential `true` execs through box_exec_async, timed from the call to
   on_exit; prints "p50_us <n>" and "p99_us <n>". Usage: exec_p50 HOME [N] */
#include <libbox.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int fired;
static box_status_t status;
static uint64_t handle;

static void on_done(void *ud, box_status_t st, const char *msg, uint64_t h, const char *json) {
  (void)ud; (void)json;
  if (msg) fprintf(stderr, "%s\n", msg);
  pthread_mutex_lock(&mu);
  status = st; handle = h; fired = 1;
  pthread_cond_signal(&cv);
  pthread_mutex_unlock(&mu);
}

static void on_exit_cb(void *ud, const box_exit_t *e) {
  (void)ud;
  pthread_mutex_lock(&mu);
  status = e->status == BOX_OK && e->exit_code == 0 ? BOX_OK : BOX_E_INTERNAL;
  fired = 1;
  pthread_cond_signal(&cv);
  pthread_mutex_unlock(&mu);
}

static box_status_t wait_fired(void) {
  pthread_mutex_lock(&mu);
  while (!fired) pthread_cond_wait(&cv, &mu);
  fired = 0;
  box_status_t st = status;
  pthread_mutex_unlock(&mu);
  return st;
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: exec_p50 HOME [N]\n"); return 2; }
  int n = argc > 2 ? atoi(argv[2]) : 2000;
  char opts[1024];
  snprintf(opts, sizeof opts, "{\"home\": \"%s\"}", argv[1]);
  box_runtime_t rt;
  if (box_runtime_open(opts, &rt, NULL) != BOX_OK) return 1;
  if (box_create(rt, "{\"isolation\": \"sandbox\", \"auto_remove\": true}", NULL, on_done, NULL, NULL) != BOX_OK || wait_fired() != BOX_OK) return 1;
  box_t box = handle;
  if (box_start(box, on_done, NULL, NULL) != BOX_OK || wait_fired() != BOX_OK) return 1;
  box_exec_callbacks_t cbs = {NULL, NULL, on_exit_cb};
  double *d = malloc(sizeof(double) * n);
  for (int i = -50; i < n; i++) {
    box_exec_t ex;
    double t = now_us();
    if (box_exec_async(box, "{\"args\": [\"true\"]}", &cbs, NULL, &ex, NULL) != BOX_OK) return 1;
    if (wait_fired() != BOX_OK) return 1;
    if (i >= 0) d[i] = now_us() - t;
    box_release(ex, NULL);
  }
  qsort(d, n, sizeof(double), cmp);
  printf("p50_us %.0f\np99_us %.0f\n", d[n / 2], d[(int)(n * 0.99)]);
  box_release(box, NULL);
  box_runtime_close(rt, NULL);
  free(d);
  return 0;
}
