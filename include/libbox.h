/*
 * libbox.h — the C ABI of libbox, an embeddable micro-VM sandbox runtime.
 *
 * Written by hand; this is the only header shipped. Link with -lbox
 * (pkg-config: libbox).
 *
 * Conventions
 * -----------
 * - Every function except box_abi_version, box_version, box_live_handles,
 *   box_string_free and box_error_free returns a status code (box_status_t,
 *   BOX_OK == 0) and accepts an optional `box_error_t **err`: when it is
 *   non-NULL and the call fails, *err receives an error the caller frees with
 *   box_error_free. On success *err is set to NULL.
 * - Handles (box_runtime_t, box_t, box_exec_t) are opaque non-zero integers
 *   from a table inside the library. 0 is never a valid handle. Using an
 *   unknown or released handle returns BOX_E_INVALID_ARGUMENT; it never
 *   crashes. C never holds a pointer into library memory except the
 *   strings documented below.
 * - Strings passed in are UTF-8, NUL-terminated, owned by the caller and only
 *   read during the call. Strings returned through `char **` are owned by the
 *   caller and freed with box_string_free.
 * - Option bags are JSON objects (schemas below). Unknown fields are
 *   rejected with BOX_E_INVALID_ARGUMENT naming the field; wrong types too.
 *
 * Threads and callbacks
 * ---------------------
 * - Callbacks run on threads owned by the library, never on the caller's
 *   thread, and never while the library holds a lock the caller could need:
 *   any libbox function (including box_exec_async) may be called from inside a
 *   callback. A callback should return promptly; output of the same exec is
 *   not delivered while its callback runs (that is the backpressure).
 * - Pointers passed to callbacks (data, messages, JSON, box_exit_t) are valid
 *   only until the callback returns; copy what you keep.
 * - An accepted asynchronous call (status BOX_OK) calls its completion
 *   callback exactly once; a rejected one (any other status) never calls it.
 *
 * JSON schemas
 * ------------
 * runtime options (box_runtime_open; may be NULL or "{}"). The library reads
 * the environment once, when the runtime opens: a field left out or empty
 * takes its variable as the process environment had it when the library was
 * loaded (bindings pass their current environment explicitly).
 *   {"home": "/path",             $LIBBOX_HOME, else ~/.local/share/libbox
 *    "boot_timeout": 90 | "1.5" | "2m",
 *                                 $LIBBOX_BOOT_TIMEOUT: how long a starting box
 *                                 may take to answer (seconds, or a Go duration);
 *                                 default 120 s for vm, 30 s for sandbox boxes
 *    "accel": "kvm" | "tcg" | "microvm-kvm" | "pc-kvm" | "pc-tcg",
 *                                 $LIBBOX_ACCEL (Linux vm boxes; default: probed)
 *    "kernel": "/path/vmlinuz",   $LIBBOX_KERNEL: guest kernel of vm boxes
 *    "kernel_modules": "/lib/modules/VERSION",  $LIBBOX_KERNEL_MODULES
 *    "agent": "/path/box-agent",  $LIBBOX_AGENT: instead of the embedded agent
 *    "vm_debug": false,           $LIBBOX_VM_DEBUG=1: kernel and agent boot
 *                                 steps in each vm box's console log
 *    "registry_auth": "registry=user:password[,...]",    $LIBBOX_REGISTRY_AUTH
 *    "insecure_registries": "host[:port][,...]",  $LIBBOX_INSECURE_REGISTRIES
 *    "registry_mirrors": "registry=host[:port][,...]",  $LIBBOX_REGISTRY_MIRRORS}
 *   A bad value fails box_runtime_open with BOX_E_INVALID_ARGUMENT.
 * box options (box_create; may be NULL or "{}"):
 *   {"image": "busybox", "platform": "linux/amd64", "name": "web-1",
 *    "isolation": "vm" | "sandbox",
 *    "cpus": 2, "memory_mib": 512, "env": {"K": "V"}, "cwd": "/work",
 *    "network": false, "auto_remove": false, "detach": false,
 *    "volumes": [{"host": "/src", "box": "/mnt/src", "read_only": true}],
 *    "from": "snapshot-or-box"}
 *   "from" clones a snapshot (by name) or a box (id or name): the new box's
 *   file system starts as the source's, shares its read-only layers (nothing
 *   is copied) and is independent of it; image, isolation, env and cwd come
 *   from the source ("image" and "isolation", when given, must match it).
 *   "network" is true, false (default: loopback only) or an object, which
 *   turns the network on unless it says "enabled": false:
 *   {"enabled": true,
 *    "allow": ["pypi.org", "*.pythonhosted.org:443", "10.0.0.0/8", "host:8080"],
 *                       only these (names, wildcards, IPs, CIDRs, "host" = the
 *                       host's loopback as host.libbox.internal, "*" = the
 *                       public internet; each with an optional :PORT);
 *                       absent or empty: the public internet (never private,
 *                       link-local, multicast or the host's own addresses)
 *    "deny": ["evil.example"],                           wins over "allow"
 *    "ports": [{"host": "127.0.0.1:8080", "box": 80, "protocol": "tcp"}],
 *                       published on the host; host port 0 picks a free one
 *                       (box info reports it); "host": "8080" means 127.0.0.1
 *    "hosts": {"db.internal": "10.1.2.3"},     names the box's DNS answers
 *    "dns": ["10.0.0.53"]}         upstream resolvers (default: the host's)
 *   Names are enforced on the host: the box's only DNS server (its gateway)
 *   answers NXDOMAIN for names not allowed; an address is reachable only
 *   while it is a recent answer of an allowed name; on ports 80 and 443 the
 *   HTTP Host or TLS SNI must name an allowed name. Denied TCP is reset at
 *   once. Sandbox boxes only for now (vm: BOX_E_UNSUPPORTED).
 * exec request (box_exec_async; required):
 *   {"args": ["sh", "-c", "echo hi"],     required, non-empty, unless image_cmd
 *    "image_cmd": false,                  true: run the image's command as
 *                                          `docker run IMAGE [ARG...]` does:
 *                                          Entrypoint + args (or + Cmd when
 *                                          args is empty or absent)
 *    "env": {"K": "V"}, "cwd": "/tmp", "user": "root" | "1000" | "1000:1000",
 *    "tty": false, "rows": 24, "cols": 80, "timeout_ms": 0,
 *    "stdin": false}                       true: stdin is fed by box_exec_write_stdin
 *                                          false: stdin is /dev/null
 * box info (box_info, box_list elements):
 *   {"id", "name", "image", "isolation", "state": "created"|"running"|"stopped",
 *    "created_at", "pid", "cpus", "memory_mib", "detach", "auto_remove", ...,
 *    "network": {"address": "192.168.127.2/24", "gateway": "192.168.127.1",
 *                "ports": [{"host": "127.0.0.1:41234", "box": 80, "protocol": "tcp"}],
 *                "denied": 3, "recent_denials": [{"time", "protocol", "dest", "reason"}],
 *                "rx_bytes", "tx_bytes",
 *                "unavailable": "..."}}        while the box runs in this process; "unavailable"
 *                                              only when a detached box's network helper did not
 *                                              answer (the rest is then its last answer)
 */
#ifndef LIBBOX_H
#define LIBBOX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on every incompatible change; compare with box_abi_version(). */
#define LIBBOX_ABI_VERSION 1

typedef int32_t box_status_t;
enum {
  BOX_OK = 0,
  BOX_E_NOT_FOUND = 1,           /* no such box, image, path or command */
  BOX_E_ALREADY_EXISTS = 2,      /* name taken */
  BOX_E_INVALID_ARGUMENT = 3,    /* bad JSON, NULL pointer, bad handle, bad path */
  BOX_E_FAILED_PRECONDITION = 4, /* wrong state: box stopped, stdin closed, ... */
  BOX_E_UNAVAILABLE = 5,         /* the box or its agent went away */
  BOX_E_DEADLINE_EXCEEDED = 6,   /* a timeout expired */
  BOX_E_CANCELED = 7,            /* cancelled by the caller */
  BOX_E_INTERNAL = 8,            /* a bug or an unexpected host failure */
  BOX_E_UNSUPPORTED = 9          /* not available on this host or build */
};

typedef uint64_t box_runtime_t;
typedef uint64_t box_t;
typedef uint64_t box_exec_t;
typedef uint64_t box_pull_t;
typedef uint64_t box_watch_t;
typedef uint64_t box_queue_t;

/* An error. Allocated by the library; free with box_error_free. */
typedef struct box_error {
  box_status_t code;
  char *message; /* UTF-8, never NULL, owned by the box_error_t */
} box_error_t;

/* How an exec ended. Passed to on_exit; valid only during that call. */
typedef struct box_exit {
  box_status_t status; /* BOX_OK: the process ran and ended (see exit_code,
                          signal). Otherwise: BOX_E_NOT_FOUND (command
                          missing), BOX_E_INVALID_ARGUMENT (bad cwd/user),
                          BOX_E_DEADLINE_EXCEEDED (timeout_ms killed it),
                          BOX_E_CANCELED (box_exec_cancel), BOX_E_UNAVAILABLE
                          (the box went away; "box … was stopped while …"
                          whenever a stop, forced remove or runtime close
                          ended it, whatever the timing) ... */
  int32_t exit_code;   /* 0..255 when it exited; -1 otherwise */
  int32_t signal;      /* the killing signal, or 0 */
  int64_t duration_us; /* from spawn to exit */
  const char *message; /* NULL when status == BOX_OK */
  const char *reason;  /* why the command never ran, or NULL: "not_found"
                          (status BOX_E_NOT_FOUND; a shell exits 127),
                          "not_executable" (BOX_E_INVALID_ARGUMENT; 126),
                          "bad_working_dir", "bad_user" (both
                          BOX_E_INVALID_ARGUMENT). Read it instead of the
                          message; more reasons may be added. With
                          status BOX_OK: "oom_killed" when the kernel's
                          OOM killer ended the process at the box's memory
                          limit (signal 9; sandbox boxes with a memory
                          limit), else NULL. */
} box_exit_t;

/* Completion of an asynchronous call. status/message as for box_error_t
   (message NULL on success). handle: the new box_t for box_create, else 0.
   json: a result document or NULL (box_copy_*: {"bytes": N}). */
typedef void (*box_complete_fn)(void *user_data, box_status_t status,
                                const char *message, uint64_t handle,
                                const char *json);

/* Image pull progress: layer digest, bytes done and total (-1 if unknown). */
typedef void (*box_progress_fn)(void *user_data, const char *layer,
                                int64_t done, int64_t total);

typedef void (*box_output_fn)(void *user_data, const uint8_t *data, size_t len);
typedef void (*box_exit_fn)(void *user_data, const box_exit_t *exit);

/* Callbacks of one exec. Any member may be NULL (that output is dropped;
   a NULL on_exit means the caller learns nothing of the end). The struct is
   copied during box_exec_async. For one exec, output callbacks are called in
   order, one at a time; on_exit is called exactly once, after every output
   callback of that exec, and nothing of that exec is called after it. */
typedef struct box_exec_callbacks {
  box_output_fn on_stdout; /* with tty: true, carries the terminal output */
  box_output_fn on_stderr;
  box_exit_fn on_exit;
} box_exec_callbacks_t;

/* ---- Event queues: exec events without callbacks ----
   An alternative to box_exec_callbacks_t for callers with an event loop
   (the Python and Node packages use it): instead of calling into the caller
   on a library thread for every output chunk and exit, the library appends
   the events of execs started with box_exec_queued to a queue and makes the
   queue's file descriptor readable; the caller watches the descriptor in its
   loop (epoll, poll, asyncio add_reader, libuv uv_poll) and takes many
   events with one box_queue_poll, on its own thread. No library thread ever
   waits for the caller, except as backpressure: while one exec has
   BOX_QUEUE_LIMIT bytes of output not yet polled, its output waits (the box
   is slowed by flow control) until a poll takes them, the queue closes or
   the exec's runtime closes. */

/* What a box_event_t carries. */
enum { BOX_EVENT_STDOUT = 1, BOX_EVENT_STDERR = 2, BOX_EVENT_EXIT = 3 };

/* Output bytes of one exec that may wait in a queue unpolled. */
#define BOX_QUEUE_LIMIT (1 << 20)

/* box_exec_queued flags. DISCARD_*: drop that stream instead of queueing
   it. RELEASE_ON_EXIT: the box_queue_poll that takes the exec's exit event
   releases its handle (do not box_release it; after that poll, calls on it
   return BOX_E_INVALID_ARGUMENT); saves a call per exec. A handle whose exit
   was dropped (the queue closed first) is released with its runtime. */
#define BOX_EXEC_DISCARD_STDOUT 1u
#define BOX_EXEC_DISCARD_STDERR 2u
#define BOX_EXEC_RELEASE_ON_EXIT 4u

/* One event of an exec. Pointers (data, exit.message, exit.reason) point
   into a buffer of the queue, valid until the next box_queue_poll or
   box_queue_close of that queue; copy what you keep. For one exec, events
   come in order (its output, then exactly one BOX_EVENT_EXIT, as on_exit
   would), and nothing of the exec comes after its exit. */
typedef struct box_event {
  uint64_t tag;        /* the tag given to box_exec_queued */
  int32_t kind;        /* BOX_EVENT_* */
  const uint8_t *data; /* STDOUT/STDERR: the bytes (NULL when len is 0) */
  size_t len;
  box_exit_t exit;     /* EXIT: how the exec ended, as on_exit gets it */
} box_event_t;

/* LIBBOX_TYPES_ONLY: the library's own build declares its functions itself. */
#ifndef LIBBOX_TYPES_ONLY

/* ABI version of the loaded library (LIBBOX_ABI_VERSION it was built with).
   Never blocks. */
uint32_t box_abi_version(void);

/* Library version string, static storage: do not free. Never blocks. */
const char *box_version(void);

/* Number of live handles of every kind (runtimes, boxes, execs, pulls,
   watches, event queues). 0 after every runtime and queue is closed and
   every handle released. Never blocks. */
int64_t box_live_handles(void);

/* Opens a runtime on a home directory. *out receives the handle. Blocks
   briefly (reads the box store). */
box_status_t box_runtime_open(const char *options_json, box_runtime_t *out,
                              box_error_t **err);

/* Closes a runtime: cancels its running execs (their on_exit still comes),
   stops boxes that are not detached, and releases every handle that came
   from it. Blocks until that is done (seconds at most). The runtime handle
   is released: closing it again returns BOX_E_INVALID_ARGUMENT. Do not call
   it from a callback of the same runtime (it would wait for that callback). */
box_status_t box_runtime_close(box_runtime_t rt, box_error_t **err);

/* Creates a box (and pulls its image if needed), asynchronously. Returns at
   once; `done` receives the box_t (owned by the caller: box_release) or an
   error. `progress` (may be NULL) is called during image pulls. `done` must
   not be NULL. */
box_status_t box_create(box_runtime_t rt, const char *options_json,
                        box_progress_fn progress, box_complete_fn done,
                        void *user_data, box_error_t **err);

/* Looks up a box by id or name; *out receives a new handle (box_release).
   Blocks briefly. */
box_status_t box_get(box_runtime_t rt, const char *id_or_name, box_t *out,
                     box_error_t **err);

/* Lists every box of the runtime's home as a JSON array of box info objects.
   *out_json is freed with box_string_free. Blocks briefly. */
box_status_t box_list(box_runtime_t rt, char **out_json, box_error_t **err);

/* Describes one box (JSON object, box_string_free). Blocks briefly. */
box_status_t box_info(box_t box, char **out_json, box_error_t **err);

/* Starts a box (boots its VM or sandbox) asynchronously; `done` is called
   once it serves execs, or with the error. Starting a running box succeeds. */
box_status_t box_start(box_t box, box_complete_fn done, void *user_data,
                       box_error_t **err);

/* Stops a box asynchronously: processes get SIGTERM, then SIGKILL; the box
   keeps its files. Stopping a stopped box succeeds. */
box_status_t box_stop(box_t box, box_complete_fn done, void *user_data,
                      box_error_t **err);

/* Removes a box and its files asynchronously. A running box is refused
   (BOX_E_FAILED_PRECONDITION) unless force != 0, which stops it first. */
box_status_t box_remove(box_runtime_t rt, const char *id_or_name, int32_t force,
                        box_complete_fn done, void *user_data,
                        box_error_t **err);

/* Runs a command in a running box. Returns at once: *out receives the exec
   handle (box_release it when you no longer need it; releasing it early
   does not stop the process and callbacks still come). The callbacks get
   `user_data` and run on library threads (see above). `cbs` may be NULL
   (all members NULL). A spawn failure (missing command, bad cwd) is
   reported through on_exit (status and box_exit_t.reason), not as this
   function's status. */
box_status_t box_exec_async(box_t box, const char *request_json,
                            const box_exec_callbacks_t *cbs, void *user_data,
                            box_exec_t *out, box_error_t **err);

/* Opens an event queue. *out receives its handle (close it with
   box_queue_close, not box_release; it belongs to no runtime), *fd a file
   descriptor that is readable while events wait (level-triggered: it stays
   readable until a poll takes the last one). The descriptor is owned by the
   queue: only watch it, never read, write or close it. Never blocks. */
box_status_t box_queue_open(box_queue_t *out, int32_t *fd, box_error_t **err);

/* Runs a command as box_exec_async does, delivering its events to `queue`
   with `tag` (any value; the caller's key for the exec) instead of calling
   callbacks. flags: 0 or BOX_EXEC_DISCARD_* bits. Everything else (the
   request, *out, control, release, errors, exactly one exit event, also
   when the spawn fails) is as for box_exec_async. */
box_status_t box_exec_queued(box_t box, const char *request_json,
                             box_queue_t queue, uint64_t tag, uint32_t flags,
                             box_exec_t *out, box_error_t **err);

/* Takes up to `capacity` events, oldest first, into `events` (caller's
   array); *count receives how many (0 when none wait). Never blocks. The
   previous poll's pointers become invalid. Polls of one queue must not run
   concurrently (one thread, the loop's, polls it). */
box_status_t box_queue_poll(box_queue_t queue, box_event_t *events,
                            size_t capacity, size_t *count, box_error_t **err);

/* Closes a queue: its waiting events are dropped, later events of execs
   still running are dropped, and its descriptor is closed (stop watching it
   first). Close it after the runtimes whose execs deliver to it (their
   exit events are all queued once box_runtime_close returns), or when you
   no longer care. Not during a poll of it. Never blocks. */
box_status_t box_queue_close(box_queue_t queue, box_error_t **err);

/* Exec control (signal, resize, close stdin, cancel) never waits behind
   stdin or output, nor for a spawn in progress: it travels apart from the
   data. Made before the process started, it is queued and applied, in
   call order, as soon as it starts, and the call returns BOX_OK at once
   (dropped if the spawn fails: on_exit reports why). Once started, a
   control call waits only for the box's acknowledgment (bounded: 5 s, then
   BOX_E_DEADLINE_EXCEEDED or BOX_E_UNAVAILABLE). None of them is ever
   blocked by another thread blocked in box_exec_write_stdin. */

/* Writes to the process's stdin (request "stdin": true). `data` is copied.
   May block: until the spawn finished, and while the box has no room (flow
   control: a process that does not read slows the writer). A blocked call
   is woken with BOX_E_FAILED_PRECONDITION ("has exited") or
   BOX_E_CANCELED when the process ends, however it ends (its own exit,
   box_exec_signal or box_exec_cancel from another thread). len 0 is a
   no-op. After box_exec_close_stdin or the exit: BOX_E_FAILED_PRECONDITION;
   without "stdin": true: BOX_E_FAILED_PRECONDITION. */
box_status_t box_exec_write_stdin(box_exec_t exec, const uint8_t *data,
                                  size_t len, box_error_t **err);

/* Closes stdin: the process reads everything written before, then EOF.
   Returns without waiting for the process to read. Idempotent. Never
   blocks on flow control or the spawn. */
box_status_t box_exec_close_stdin(box_exec_t exec, box_error_t **err);

/* Sends a signal (1..64) to the process group of the exec. After the exit:
   BOX_E_FAILED_PRECONDITION. Never blocks on flow control or the spawn. */
box_status_t box_exec_signal(box_exec_t exec, int32_t signal, box_error_t **err);

/* Resizes the exec's terminal. An exec without "tty": true:
   BOX_E_FAILED_PRECONDITION; 0 or > 65535: BOX_E_INVALID_ARGUMENT. Never
   blocks on flow control or the spawn. */
box_status_t box_exec_resize(box_exec_t exec, uint32_t rows, uint32_t cols,
                             box_error_t **err);

/* Cancels the exec: kills its process group; on_exit then reports
   BOX_E_CANCELED. Before the process started, the spawn is abandoned.
   Idempotent; after the exit it does nothing. Never blocks. */
box_status_t box_exec_cancel(box_exec_t exec, box_error_t **err);

/* Copies follow `docker cp`'s rules (box_copy_in and box_copy_out alike):
   - SRC copied to an existing directory lands inside it under its own name;
     SRC ending in "/." copies a directory's contents instead;
   - otherwise DEST becomes the copy (box side: parents are created; host
     side: the parent must exist); a directory never replaces a file
     (BOX_E_FAILED_PRECONDITION); DEST ending in "/" must be a directory or
     is created as one from a directory (else BOX_E_NOT_FOUND);
   - a box path may omit the leading "/" (it is relative to the box's /);
     symlinks in it resolve inside the box root as in a chroot (a link to "/"
     leads to the box's /), ".." stops at the box root, and a final symlink
     of a source is copied as a link unless the path ends in "/" or "/.";
   - nothing is ever written outside the box root, nor outside DEST on the
     host (a stream from the box is not trusted).
   Copies a host file or directory into the box, asynchronously. */
box_status_t box_copy_in(box_t box, const char *host_path, const char *box_path,
                         box_complete_fn done, void *user_data,
                         box_error_t **err);

/* Copies a box file or directory to the host (rules above),
   asynchronously. */
box_status_t box_copy_out(box_t box, const char *box_path, const char *host_path,
                          box_complete_fn done, void *user_data,
                          box_error_t **err);

/* Pulls (or refreshes) an image asynchronously: `ref` as Docker users write
   it ("alpine:3.20", "ghcr.io/o/r@sha256:..."), or "oci-layout:/dir[:tag]",
   "docker-archive:/file.tar", or "busybox" (builtin). `progress` may be
   NULL. `done` gets the image as JSON (see box_images). */
box_status_t box_pull(box_runtime_t rt, const char *ref, box_progress_fn progress,
                      box_complete_fn done, void *user_data, box_error_t **err);

/* Builds the VM template of `image` (as box_pull takes it; NULL refused)
   for vm boxes created with `opts_json` (box options; only "cpus",
   "memory_mib" and "platform" matter; may be NULL), asynchronously: later
   vm boxes of that image, CPUs and memory start by restoring the template's
   booted machine instead of booting a kernel ($LIBBOX_VM_TEMPLATES=0 turns
   restoring off). A template is also built in the background after the
   first boot of a configuration; this call builds it now. It boots one VM,
   so it may take as long as a box start. `done` gets "{}" once the template
   exists (at once when it did); boxes with volumes or a network cannot use
   one (BOX_E_FAILED_PRECONDITION), nor a platform without VM templates
   (BOX_E_UNSUPPORTED). Called once, on a libbox thread. */
box_status_t box_warm(box_runtime_t rt, const char *image, const char *opts_json,
                      box_complete_fn done, void *user_data, box_error_t **err);

/* Pulls like box_pull, with a request and a handle to cancel it. request_json:
   {"ref": "alpine:3.20", "platform": "linux/arm64"} ("platform" is optional:
   "os/arch[/variant]" of a multi-arch image, default the host's). *out
   receives the pull handle; box_release it when no longer needed (releasing
   it does not stop the pull). `done` is called exactly once, on a library
   thread, as for box_pull. When the pull moves a tag, the image the tag named
   before is deleted unless a box uses it. */
box_status_t box_pull_async(box_runtime_t rt, const char *request_json,
                            box_progress_fn progress, box_complete_fn done,
                            void *user_data, box_pull_t *out, box_error_t **err);

/* Cancels a pull started by box_pull_async: the download stops and `done`
   gets BOX_E_CANCELED (unless the pull already ended). What was downloaded
   is kept; the next pull of the image resumes it. Idempotent, never blocks. */
box_status_t box_pull_cancel(box_pull_t pull, box_error_t **err);

/* Deletes, asynchronously, the images no reference names any more (a tag
   moved, or a forced removal) once no box uses them, the cached layers no
   image needs, and what interrupted pulls left. `done` gets
   {"roots": N, "blobs": N, "bytes": N} (what was reclaimed). */
box_status_t box_image_prune(box_runtime_t rt, box_complete_fn done,
                             void *user_data, box_error_t **err);

/* Lists the stored images as a JSON array of
   {"ref", "id", "root", "size", "created", "config": {"env", "working_dir",
   "user", "entrypoint", "cmd"}}. *out_json is freed with box_string_free.
   Blocks briefly. */
box_status_t box_images(box_runtime_t rt, char **out_json, box_error_t **err);

/* ---- Snapshots, restore, export ----
   A snapshot freezes a box's file system under a name unique in the home
   (read-only layers: an overlay lower dir for sandboxes, a qcow2 backing
   file for VMs). Completions run on a library thread, exactly once, as for
   box_start; `done` must not be NULL.

   box_snapshot: request_json {"name": "before-fix", "memory": false}. The
   box may be running: it is paused while the layer is taken (sandbox:
   cgroup freezer; VM: vCPUs stopped) and goes on afterwards. "memory": true
   (a running VM box without volumes or network) also saves its memory and
   device state: a box created "from" the snapshot, or restored to it,
   resumes the machine at its next start instead of booting (its processes
   run on with the same pids, tmpfs files are there; a clone gets a fresh
   random seed, the current clock, its own hostname and box id; a restore
   keeps its hostname and id, gets the clock and a seed). Sandbox box:
   BOX_E_UNSUPPORTED (no checkpoint/restore of host processes); a stopped
   box, volumes or network: BOX_E_FAILED_PRECONDITION. A taken name:
   BOX_E_ALREADY_EXISTS. `done` gets the snapshot as a JSON object: {"name",
   "id", "box", "box_name", "isolation", "image", "image_id", "parent",
   "created_at", "size" (bytes its own layer takes on disk), "written"
   (bytes copied to take it), "used_by": ["box NAME", "snapshot NAME", ...],
   "memory" (true for a memory snapshot)}. */
box_status_t box_snapshot(box_t box, const char *request_json,
                          box_complete_fn done, void *user_data,
                          box_error_t **err);

/* Lists the home's snapshots as a JSON array of objects as above, oldest
   first. *out_json is freed with box_string_free. Blocks briefly. */
box_status_t box_snapshots(box_runtime_t rt, char **out_json, box_error_t **err);

/* Removes a snapshot asynchronously. While a box or another snapshot sits on
   it: BOX_E_FAILED_PRECONDITION unless force != 0 (then the name is freed at
   once and the layer deleted when its last user is). */
box_status_t box_snapshot_remove(box_runtime_t rt, const char *name,
                                 int32_t force, box_complete_fn done,
                                 void *user_data, box_error_t **err);

/* Rolls a stopped box back to a snapshot (same image and isolation)
   asynchronously: its own changes are discarded. A running box is refused
   (BOX_E_FAILED_PRECONDITION: stop it first). */
box_status_t box_restore(box_t box, const char *snapshot, box_complete_fn done,
                         void *user_data, box_error_t **err);

/* Writes the box's file system as an OCI image layout in `dir` (absolute;
   new or empty) asynchronously; `done` gets {"image": "oci-layout:DIR"},
   which box_create's "image" accepts. Volumes, /proc, /sys, /dev and /run
   are left out. A stopped box is started for it and stopped again; a
   running box is read live. */
box_status_t box_export(box_t box, const char *dir, box_complete_fn done,
                        void *user_data, box_error_t **err);

/* Removes an image asynchronously. An image used by a box is refused
   (BOX_E_FAILED_PRECONDITION) unless force != 0. */
box_status_t box_image_remove(box_runtime_t rt, const char *ref, int32_t force,
                              box_complete_fn done, void *user_data,
                              box_error_t **err);

/* Checks what this host needs to run boxes, without starting one: QEMU
   (path, version), KVM, the guest kernel VM boxes would boot, /dev/net/tun,
   user namespaces, cgroup controllers, free space in the home. options_json
   is the runtime options (may be NULL). *out_json (box_string_free) is
     {"checks": [{"name", "status": "ok"|"warn"|"fail", "detail", "fix",
                  "needed_by": ["vm"|"sandbox"]}],
      "isolation": "vm", "ready": true, "runs": ["vm", "sandbox"]}
   where "ready" says whether boxes of the default isolation can run and
   "fix" says how to fix a check that is not ok. Blocks up to a few seconds;
   call it from a worker thread in an event loop. */
box_status_t box_doctor(const char *options_json, char **out_json, box_error_t **err);

/* ---- files, stats, processes -------------------------------------------
   Paths are absolute box paths; symlinks resolve inside the box root as in
   a chroot; ".." is refused (BOX_E_INVALID_ARGUMENT). A missing path is
   BOX_E_NOT_FOUND; a directory where a file is wanted, or the reverse,
   BOX_E_FAILED_PRECONDITION. Every call is asynchronous: it checks its
   arguments (a bad request returns an error and never calls done), then
   calls done exactly once from a library thread. request_json is copied
   during the call; NULL or "" means {} where no field is required.
   Unknown fields are BOX_E_INVALID_ARGUMENT. */

/* Reads a file: {"path", "offset": 0, "length": -1 (to the end)}. The bytes
   reach on_data (may be NULL) in order, one call at a time, valid only
   during the call; then done gets {"bytes": N}. */
box_status_t box_fs_read(box_t box, const char *request_json, box_output_fn on_data,
                         box_complete_fn done, void *user_data, box_error_t **err);

/* Writes `len` bytes of `data` (copied during the call) as one file:
   {"path", "mode": 420 (0644), "make_parents": true, "append": false,
   "user": "" (the box's default user)}. Without append, the file is
   replaced atomically. done gets {"bytes": N}. */
box_status_t box_fs_write(box_t box, const char *request_json, const uint8_t *data,
                          size_t len, box_complete_fn done, void *user_data,
                          box_error_t **err);

/* Writes several files in one call, each atomically, in order:
   {"files": [{"path", "data": "<base64>", "mode": 0}], "mode", "make_parents",
   "user"}. done gets {"files": N}. */
box_status_t box_fs_write_many(box_t box, const char *request_json,
                               box_complete_fn done, void *user_data, box_error_t **err);

/* Lists a directory: {"path", "depth": 1}. done gets a JSON array of file
   infos: {"name", "path", "type": "file"|"dir"|"symlink"|"other", "size",
   "mode" (chmod bits), "uid", "gid", "mtime" (RFC 3339),
   "link_target"}. Symlinks are listed, not followed. */
box_status_t box_fs_list(box_t box, const char *request_json,
                         box_complete_fn done, void *user_data, box_error_t **err);

/* {"path"}: done gets one file info (a final symlink is described). */
box_status_t box_fs_stat(box_t box, const char *request_json,
                         box_complete_fn done, void *user_data, box_error_t **err);

/* {"path"}: done gets {"exists": true|false}. */
box_status_t box_fs_exists(box_t box, const char *request_json,
                           box_complete_fn done, void *user_data, box_error_t **err);

/* {"path", "parents": false}: with parents, missing parents are created and
   an existing directory is no error; without, an existing path is
   BOX_E_ALREADY_EXISTS. done gets {}. */
box_status_t box_fs_mkdir(box_t box, const char *request_json,
                          box_complete_fn done, void *user_data, box_error_t **err);

/* {"path", "recursive": false}: a non-empty directory needs recursive. */
box_status_t box_fs_remove(box_t box, const char *request_json,
                           box_complete_fn done, void *user_data, box_error_t **err);

/* {"src", "dst"}: replaces dst as rename(2) does. */
box_status_t box_fs_rename(box_t box, const char *request_json,
                           box_complete_fn done, void *user_data, box_error_t **err);

/* Watches a directory: {"path", "recursive": false}. Returns at once with
   the watch's handle in *out (never blocks). Each event reaches on_event
   (may be NULL) as one JSON object, not NUL-terminated, valid only during
   the call, in order, one at a time: first {"type": "ready"} once the watch
   is in place (changes after it are reported), then {"type": "create"|
   "write"|"remove"|"rename"|"chmod"|"overflow", "path", "is_dir"}.
   "overflow" means events were lost: rescan. done is called exactly once,
   after every on_event, when the watch ends: BOX_OK after
   box_fs_watch_close or box_runtime_close; an error when the watch could
   not start (BOX_E_NOT_FOUND, ...) or the box stopped (BOX_E_UNAVAILABLE).
   Release the handle with box_release after done. */
box_status_t box_fs_watch(box_t box, const char *request_json, box_output_fn on_event,
                          box_complete_fn done, void *user_data, box_watch_t *out,
                          box_error_t **err);

/* Ends a watch (its done follows). Never blocks. */
box_status_t box_fs_watch_close(box_watch_t watch, box_error_t **err);

/* Samples the box's resource use. done gets {"time", "cpu_time_ns",
   "cpu_percent", "guest_cpu_time_ns", "memory_total", "memory_used",
   "host_rss", "disk_bytes", "processes", "execs_running", "execs_served",
   "network", "net_rx_bytes", "net_tx_bytes", "uptime_ns",
   "boot": [{"name", "duration_ns"}]} (see libbox.Stats). */
box_status_t box_stats(box_t box, box_complete_fn done, void *user_data, box_error_t **err);

/* Publishes a port of the running box on the host, as "ports" in the
   create options does: mapping_json {"host": "127.0.0.1:8080" | ":8080" |
   "8080", "box": 80, "protocol": "tcp" | "udp"} (host on 127.0.0.1 unless
   an IP is given; port 0 picks a free one). done gets the mapping as bound
   ({"host": "127.0.0.1:41234", "box": 80, "protocol": "tcp"}); box info
   lists it until box_unpublish or the box stops. mapping_json is copied
   before the call returns. Errors: BOX_E_FAILED_PRECONDITION (the box has
   no network, or does not run in this process and was not started here
   with box_start), BOX_E_INVALID_ARGUMENT (bad mapping), the bind's error
   (address in use). A detached box's ports live in its network helper
   and stay published after this process exits. */
box_status_t box_publish(box_t box, const char *mapping_json, box_complete_fn done,
                         void *user_data, box_error_t **err);

/* Stops publishing a port: mapping_json {"host": "127.0.0.1:41234"} (as
   box info shows it) or {"box": 80, "protocol": "tcp"} (the first port
   published for that box port). done gets {}; BOX_E_NOT_FOUND when nothing
   matches. */
box_status_t box_unpublish(box_t box, const char *mapping_json, box_complete_fn done,
                           void *user_data, box_error_t **err);

/* Lists the running execs of the box, also those another process started:
   done gets a JSON array of {"pid", "args", "uid", "user", "started", "tty"}. */
box_status_t box_processes(box_t box, box_complete_fn done, void *user_data,
                           box_error_t **err);

/* Signals an exec's process (or a descendant) by its pid in the box:
   {"pid", "signal": 0 (SIGKILL)}. Any other pid is BOX_E_NOT_FOUND. */
box_status_t box_process_kill(box_t box, const char *request_json,
                              box_complete_fn done, void *user_data, box_error_t **err);

/* Releases a box, exec, pull or watch handle. Releasing twice, a handle that was never
   issued, a runtime or a queue (box_runtime_close, box_queue_close) returns
   BOX_E_INVALID_ARGUMENT. Never blocks. */
box_status_t box_release(uint64_t handle, box_error_t **err);

/* Frees a string returned by the library. NULL is a no-op. */
void box_string_free(char *s);

/* Frees an error returned by the library. NULL is a no-op. */
void box_error_free(box_error_t *err);

#endif /* LIBBOX_TYPES_ONLY */

#ifdef __cplusplus
}
#endif

#endif /* LIBBOX_H */
