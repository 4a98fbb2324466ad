/* Sequential `true` execs through box_exec_async, each timed from the call
   to on_exit.
     exec_p50 HOME [N]    runs N (default 2000) after 50 warm-up execs and
                          prints "p50_us <n>" and "p99_us <n>", then what
                          the N execs cost this process (all its threads,
                          not the box): "cpu_us_per_exec <n>",
                          "vcsw_per_exec <n>" and "ivcsw_per_exec <n>"
                          (voluntary and involuntary context switches).
     exec_p50 HOME -serve prints "ready" once its box runs, then for each
                          line "K" on stdin runs K execs and prints one line:
                          the process CPU time they took (us), then each
                          one's duration (us). An empty line or EOF ends it.
   -serve lets a driver interleave these execs with its own, batch by batch,
   so both run under the same load. */
#include <libbox.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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

static double ru_cpu_us(const struct rusage *ru) {
  return (ru->ru_utime.tv_sec + ru->ru_stime.tv_sec) * 1e6 + ru->ru_utime.tv_usec + ru->ru_stime.tv_usec;
}

static double cpu_us(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru_cpu_us(&ru);
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static const box_exec_callbacks_t cbs = {NULL, NULL, on_exit_cb};

/* one_exec runs `true` once; returns its duration in us, or -1. */
static double one_exec(box_t box) {
  box_exec_t ex;
  double t = now_us();
  if (box_exec_async(box, "{\"args\": [\"true\"]}", &cbs, NULL, &ex, NULL) != BOX_OK) return -1;
  if (wait_fired() != BOX_OK) return -1;
  t = now_us() - t;
  box_release(ex, NULL);
  return t;
}

static int serve(box_t box) {
  printf("ready\n");
  fflush(stdout);
  char line[64];
  while (fgets(line, sizeof line, stdin)) {
    int k = atoi(line);
    if (k <= 0) break;
    double *d = malloc(sizeof(double) * k);
    double c = cpu_us();
    for (int i = 0; i < k; i++)
      if ((d[i] = one_exec(box)) < 0) { free(d); return 1; }
    printf("%.0f", cpu_us() - c);
    for (int i = 0; i < k; i++) printf(" %.0f", d[i]);
    printf("\n");
    fflush(stdout);
    free(d);
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: exec_p50 HOME [N | -serve]\n"); return 2; }
  int serving = argc > 2 && strcmp(argv[2], "-serve") == 0;
  int n = argc > 2 && !serving ? atoi(argv[2]) : 2000;
  if (n < 1) { fprintf(stderr, "exec_p50: N must be at least 1\n"); return 2; }
  char opts[1024];
  snprintf(opts, sizeof opts, "{\"home\": \"%s\"}", argv[1]);
  box_runtime_t rt;
  if (box_runtime_open(opts, &rt, NULL) != BOX_OK) return 1;
  if (box_create(rt, "{\"isolation\": \"sandbox\", \"auto_remove\": true}", NULL, on_done, NULL, NULL) != BOX_OK || wait_fired() != BOX_OK) return 1;
  box_t box = handle;
  if (box_start(box, on_done, NULL, NULL) != BOX_OK || wait_fired() != BOX_OK) return 1;
  int rc = 0;
  if (serving) {
    rc = serve(box);
  } else {
    double *d = malloc(sizeof(double) * n);
    struct rusage r0, r1;
    for (int i = -50; i < n && rc == 0; i++) {
      if (i == 0) getrusage(RUSAGE_SELF, &r0);
      double t = one_exec(box);
      if (t < 0) rc = 1;
      else if (i >= 0) d[i] = t;
    }
    getrusage(RUSAGE_SELF, &r1);
    if (rc == 0) {
      qsort(d, n, sizeof(double), cmp);
      printf("p50_us %.0f\np99_us %.0f\n", d[n / 2], d[(int)(n * 0.99)]);
      printf("cpu_us_per_exec %.0f\nvcsw_per_exec %.2f\nivcsw_per_exec %.2f\n", (ru_cpu_us(&r1) - ru_cpu_us(&r0)) / n,
             (double)(r1.ru_nvcsw - r0.ru_nvcsw) / n, (double)(r1.ru_nivcsw - r0.ru_nivcsw) / n);
    }
    free(d);
  }
  box_release(box, NULL);
  box_runtime_close(rt, NULL);
  return rc;
}
