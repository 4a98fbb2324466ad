'use strict';
/**
 * libbox — run commands concurrently in isolated Linux boxes from Node.js.
 *
 * A Promise API over libbox.so, reached through a small Node-API addon
 * (src/addon.c). Library callbacks arrive on library threads and are handed
 * to this thread by one threadsafe function; this module only routes them.
 *
 * It must never block the event loop on a box (every call that can take long
 * is asynchronous), never keep a finished script alive when nothing is
 * pending, and never let an exec's output grow without bound when a stream
 * consumer is slow (the library thread waits instead).
 */
const os = require('node:os');
const path = require('node:path');
const { Readable, Writable } = require('node:stream');

let native;
try {
  native = require('./libbox.node');
} catch (e) {
  // An ABI mismatch (code "Unsupported") already says what to do.
  const err = new Error(
    e.code === 'Unsupported'
      ? `libbox: ${e.message}`
      : `libbox: cannot load the native addon (${e.message}); reinstall the libbox package ` +
          '(libbox.node and libbox.so must sit side by side and come from one build)',
    { cause: e },
  );
  err.code = e.code === 'Unsupported' ? 'Unsupported' : 'Unavailable';
  throw err;
}

/** Error class names, indexed by the C status code (BOX_E_*). */
const CODES = [
  'OK',
  'NotFound',
  'AlreadyExists',
  'InvalidArgument',
  'FailedPrecondition',
  'Unavailable',
  'DeadlineExceeded',
  'Canceled',
  'Internal',
  'Unsupported',
];

/** An error reported by libbox. `code` is the class name ("NotFound", ...). */
class LibboxError extends Error {
  constructor(code, message, options) {
    super(message, options);
    this.name = 'LibboxError';
    this.code = CODES.includes(code) && code !== 'OK' ? code : 'Internal';
    this.status = CODES.indexOf(this.code);
  }
}

/** Rejection of an operation whose AbortSignal fired. */
class AbortError extends Error {
  constructor(message = 'The operation was aborted', options) {
    super(message, options);
    this.name = 'AbortError';
    this.code = 'ABORT_ERR';
  }
}

function fromStatus(status, message) {
  const code = CODES[status] || 'Internal';
  return new LibboxError(code, message || `libbox: ${code}`);
}

function abortError(signal) {
  return new AbortError('The operation was aborted', { cause: signal && signal.reason });
}

function closedError(what) {
  return new LibboxError('FailedPrecondition', `${what} is closed: create a new one`);
}

// ---- event routing and keeping the event loop alive ----

const M_COMPLETE = 1;
const M_STDOUT = 2;
const M_STDERR = 3;
const M_EXIT = 4;
const M_PROGRESS = 5;
const M_DATA = 6;

/** Pending operations by id; each holds the event loop until it settles. */
const waiting = new Map();
let lastId = 0;
let pending = 0;

function newId() {
  do {
    lastId = lastId >= 0xfffffffe ? 1 : lastId + 1;
  } while (waiting.has(lastId));
  return lastId;
}

function hold() {
  if (pending++ === 0) native.ref();
}

function drop() {
  if (--pending === 0) native.unref();
}

function dispatch(kind, id, a, b, c, d, e, f) {
  const w = waiting.get(id);
  if (w === undefined) return true;
  switch (kind) {
    case M_STDOUT:
      return w.output(0, a);
    case M_STDERR:
      return w.output(1, a);
    case M_COMPLETE:
      waiting.delete(id);
      w.release();
      w.complete(a, b, c, d);
      return true;
    case M_EXIT:
      waiting.delete(id);
      w.release();
      w.exit(a, b, c, d, e, f);
      return true;
    case M_DATA:
      if (w.data) w.data(a);
      return true;
    case M_PROGRESS:
      if (w.progress) w.progress({ layer: a, done: Number(b), total: Number(c) });
      return true;
  }
  return true;
}

native.init(dispatch, fromStatus);
// Closes every runtime (stopping boxes that are not detached) when the
// process exits, whether the loop drained or process.exit() was called.
process.on('exit', () => native.shutdown());

/** Registers an entry in `waiting` that holds the loop until it settles. */
function register(id, entry) {
  let held = true;
  entry.release = () => {
    if (held) {
      held = false;
      drop();
    }
  };
  entry.ref = () => {
    if (!held && waiting.has(id)) {
      held = true;
      hold();
    }
  };
  entry.unref = entry.release;
  waiting.set(id, entry);
  hold();
}

/** Runs one asynchronous library call; resolves with {handle, json}. */
function call(start, progress) {
  return new Promise((resolve, reject) => {
    const id = newId();
    try {
      start(id);
    } catch (err) {
      reject(err);
      return;
    }
    register(id, {
      progress,
      complete(status, message, handle, json) {
        if (status === 0) resolve({ handle, json });
        else reject(fromStatus(status, message));
      },
    });
  });
}

// ---- argument checking (TypeError, synchronously) ----

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function checkKeys(obj, allowed, what) {
  if (!isPlainObject(obj)) throw new TypeError(`${what} must be an object`);
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) {
      throw new TypeError(`unknown ${what} field "${k}" (known: ${allowed.join(', ')})`);
    }
  }
}

function checkString(v, what, { optional = true, nonEmpty = false } = {}) {
  if (v === undefined && optional) return;
  if (typeof v !== 'string' || (nonEmpty && v === '')) {
    throw new TypeError(`${what} must be a ${nonEmpty ? 'non-empty ' : ''}string`);
  }
}

function checkEnv(env, what) {
  if (env === undefined) return;
  if (!isPlainObject(env)) throw new TypeError(`${what} must be an object of strings`);
  for (const [k, v] of Object.entries(env)) {
    if (typeof v !== 'string') throw new TypeError(`${what}.${k} must be a string`);
  }
}

function checkInt(v, what, min) {
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw new TypeError(`${what} must be an integer >= ${min}`);
  }
}

function checkBool(v, what) {
  if (v !== undefined && typeof v !== 'boolean') throw new TypeError(`${what} must be a boolean`);
}

const BOX_OPTIONS = [
  'image',
  'from',
  'platform',
  'name',
  'isolation',
  'cpus',
  'memoryMib',
  'env',
  'cwd',
  'network',
  'allowNet',
  'denyNet',
  'ports',
  'hosts',
  'dns',
  'autoRemove',
  'detach',
  'volumes',
  'onProgress',
];

function checkStrings(v, what) {
  if (v === undefined) return;
  if (!Array.isArray(v)) throw new TypeError(`${what} must be an array of strings`);
  v.forEach((s, i) => checkString(s, `${what}[${i}]`, { optional: false, nonEmpty: true }));
}

/** One port mapping, [host, box, protocol] or {host, box, protocol}, as
 * JSON: host "IP:PORT", ":PORT", "PORT" or a number (defaultHost when
 * absent), protocol "tcp" (default) or "udp". */
function portMapping(p, what, defaultHost = '0') {
  if (Array.isArray(p)) p = { host: p[0], box: p[1], protocol: p[2] };
  checkKeys(p, ['host', 'box', 'protocol'], what);
  if (typeof p.host === 'number') p = { ...p, host: String(p.host) };
  checkString(p.host, `${what}.host`);
  checkInt(p.box, `${what}.box`, 1);
  checkString(p.protocol, `${what}.protocol`);
  return { host: p.host || defaultHost, box: p.box || 0, protocol: p.protocol || 'tcp' };
}

/** The "network" value of the box options JSON: a boolean, or an object
 * when allowNet, denyNet, ports, hosts or dns are given. */
function networkJSON(opts) {
  checkStrings(opts.allowNet, 'allowNet');
  checkStrings(opts.denyNet, 'denyNet');
  checkStrings(opts.dns, 'dns');
  const obj = { enabled: opts.network === true };
  if (opts.allowNet !== undefined) obj.allow = opts.allowNet;
  if (opts.denyNet !== undefined) obj.deny = opts.denyNet;
  if (opts.dns !== undefined) obj.dns = opts.dns;
  if (opts.hosts !== undefined) {
    if (opts.hosts === null || typeof opts.hosts !== 'object' || Array.isArray(opts.hosts)) {
      throw new TypeError('hosts must be an object of name to IP');
    }
    for (const [k, v] of Object.entries(opts.hosts)) checkString(v, `hosts.${k}`, { optional: false, nonEmpty: true });
    obj.hosts = opts.hosts;
  }
  if (opts.ports !== undefined) {
    if (!Array.isArray(opts.ports)) throw new TypeError('ports must be an array');
    obj.ports = opts.ports.map((p, i) => portMapping(p, `ports[${i}]`));
  }
  if (Object.keys(obj).length === 1) return opts.network;
  if (!obj.enabled) throw new TypeError('allowNet, denyNet, ports, hosts or dns need network: true');
  return obj;
}

/** Box options (camelCase) to the box options JSON of include/libbox.h. */
function boxOptionsJSON(opts) {
  checkKeys(opts, BOX_OPTIONS, 'box option');
  checkString(opts.image, 'image', { nonEmpty: true });
  checkString(opts.from, 'from', { nonEmpty: true });
  checkString(opts.platform, 'platform', { nonEmpty: true });
  checkString(opts.name, 'name', { nonEmpty: true });
  if (opts.isolation !== undefined && opts.isolation !== 'vm' && opts.isolation !== 'sandbox') {
    throw new TypeError('isolation must be "vm" or "sandbox"');
  }
  checkInt(opts.cpus, 'cpus', 1);
  checkInt(opts.memoryMib, 'memoryMib', 1);
  checkEnv(opts.env, 'env');
  checkString(opts.cwd, 'cwd');
  checkBool(opts.network, 'network');
  checkBool(opts.autoRemove, 'autoRemove');
  checkBool(opts.detach, 'detach');
  if (opts.onProgress !== undefined && typeof opts.onProgress !== 'function') {
    throw new TypeError('onProgress must be a function');
  }
  const out = {
    image: opts.image,
    from: opts.from,
    platform: opts.platform,
    name: opts.name,
    isolation: opts.isolation,
    cpus: opts.cpus,
    memory_mib: opts.memoryMib,
    env: opts.env,
    cwd: opts.cwd,
    network: networkJSON(opts),
    auto_remove: opts.autoRemove === undefined ? true : opts.autoRemove,
    detach: opts.detach,
  };
  if (opts.volumes !== undefined) {
    if (!Array.isArray(opts.volumes)) throw new TypeError('volumes must be an array');
    out.volumes = opts.volumes.map((v, i) => {
      checkKeys(v, ['host', 'box', 'readOnly'], `volumes[${i}]`);
      checkString(v.host, `volumes[${i}].host`, { optional: false, nonEmpty: true });
      checkString(v.box, `volumes[${i}].box`, { optional: false, nonEmpty: true });
      checkBool(v.readOnly, `volumes[${i}].readOnly`);
      return { host: v.host, box: v.box, read_only: v.readOnly === true };
    });
  }
  return JSON.stringify(out);
}

const EXEC_OPTIONS = ['env', 'cwd', 'user', 'stdin', 'timeoutMs', 'signal', 'tty', 'rows', 'cols'];

/** Checks exec/spawn arguments; returns the request JSON and what to do with stdin. */
function execRequest(cmd, args, opts, spawn) {
  // cmd null: the image's command (Entrypoint + args, or + Cmd).
  if (cmd !== null) checkString(cmd, 'cmd', { optional: false, nonEmpty: true });
  if (!Array.isArray(args) || !args.every((a) => typeof a === 'string')) {
    throw new TypeError('args must be an array of strings');
  }
  checkKeys(opts, EXEC_OPTIONS, 'exec option');
  checkEnv(opts.env, 'env');
  checkString(opts.cwd, 'cwd');
  if (opts.user !== undefined && typeof opts.user !== 'string' && !Number.isInteger(opts.user)) {
    throw new TypeError('user must be a string ("root", "1000", "1000:1000") or an integer uid');
  }
  if (opts.timeoutMs !== undefined) {
    if (typeof opts.timeoutMs !== 'number' || !Number.isFinite(opts.timeoutMs) || opts.timeoutMs < 0) {
      throw new TypeError('timeoutMs must be a finite number >= 0');
    }
  }
  if (opts.signal !== undefined && !(opts.signal instanceof AbortSignal)) {
    throw new TypeError('signal must be an AbortSignal');
  }
  checkBool(opts.tty, 'tty');
  checkInt(opts.rows, 'rows', 1);
  checkInt(opts.cols, 'cols', 1);
  let stdin = opts.stdin;
  let feed = null;
  if (typeof stdin === 'string') feed = Buffer.from(stdin);
  else if (stdin instanceof Uint8Array) feed = Buffer.from(stdin.buffer, stdin.byteOffset, stdin.byteLength);
  else if (spawn && (stdin === undefined || stdin === 'pipe')) stdin = 'pipe';
  else if (stdin === undefined || stdin === null || stdin === 'ignore') stdin = null;
  else {
    throw new TypeError(
      spawn
        ? 'stdin must be "pipe", "ignore", null, a string or a Uint8Array'
        : 'stdin must be a string or a Uint8Array',
    );
  }
  const req = {
    args: cmd === null ? args : [cmd, ...args],
    image_cmd: cmd === null ? true : undefined,
    env: opts.env,
    cwd: opts.cwd,
    user: opts.user === undefined ? undefined : String(opts.user),
    tty: opts.tty,
    rows: opts.rows,
    cols: opts.cols,
    timeout_ms: opts.timeoutMs === undefined ? undefined : Math.ceil(opts.timeoutMs),
    stdin: feed !== null || stdin === 'pipe',
  };
  return { json: JSON.stringify(req), feed, pipe: stdin === 'pipe', signal: opts.signal };
}

function signalNumber(sig) {
  if (typeof sig === 'number' && Number.isInteger(sig) && sig > 0) return sig;
  if (typeof sig === 'string' && Object.hasOwn(os.constants.signals, sig)) return os.constants.signals[sig];
  throw new TypeError(`unknown signal ${String(sig)}: use a name like "SIGTERM" or a positive number`);
}

function camelCase(info) {
  const out = {};
  for (const [k, v] of Object.entries(info)) {
    out[k.replace(/_([a-z])/g, (_, c) => c.toUpperCase())] = v;
  }
  return out;
}

/** Writes `data` to the exec's stdin in pieces, then closes it. */
async function feedStdin(ctx, data, exited) {
  const piece = 1 << 20;
  try {
    for (let off = 0; off < data.length && !exited(); off += piece) {
      await native.execWrite(ctx, data.subarray(off, off + piece));
    }
    if (!exited()) native.execCloseStdin(ctx);
  } catch (err) {
    // The process stopped reading (it exited or closed stdin): its exit
    // status is what the caller learns from.
    try {
      if (!exited()) native.execCloseStdin(ctx);
    } catch (_) {}
  }
}

/** A signal number as child_process names it ("SIGTERM"); the number when it has no name. */
function signalName(n) {
  for (const [name, num] of Object.entries(os.constants.signals)) if (num === n) return name;
  return n;
}

/** The end of an exec, shaped like child_process: {exitCode, signal} (exitCode null and signal "SIGTERM" when a signal ended it), or the error it ended with. */
// reason: why the command never ran (box_exit_t.reason), set on the error.
function exitResult(status, message, exitCode, sig, durationUs, reason) {
  if (status !== 0) {
    const error = fromStatus(status, message);
    if (reason) error.reason = reason;
    return { error };
  }
  return {
    exitCode: exitCode >= 0 ? exitCode : null,
    signal: sig > 0 ? signalName(sig) : null,
    durationMs: Number(durationUs) / 1000,
    oomKilled: reason === 'oom_killed',
  };
}

// ---- Process ----

/**
 * A running command started by Box.spawn. stdout/stderr are Readable
 * streams (async iterables of Buffers), stdin a Writable (or null).
 */
class Process {
  #ctx;
  #exited = false;
  #entry;
  #done;
  #paused = [false, false];

  /** @internal */
  constructor(box, start, req) {
    this.exitCode = null;
    this.signalCode = null;
    const flow = (s) => ({
      highWaterMark: 64 * 1024,
      read: () => {
        if (this.#paused[s]) {
          this.#paused[s] = false;
          native.execFlow(this.#ctx, s, 0);
        }
      },
      destroy: (err, cb) => {
        if (!this.#exited) native.execFlow(this.#ctx, s, 1); // drop the rest
        cb(err);
      },
    });
    this.stdout = new Readable(flow(0));
    this.stderr = new Readable(flow(1));
    this.stdin = null;
    const signal = req.signal;
    let aborted = false;
    const onAbort = () => {
      aborted = true;
      this.#cancel();
    };
    let resolve, reject;
    this.#done = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.#done.catch(() => {}); // a caller who never waits must not crash the process
    const id = newId();
    const streams = [this.stdout, this.stderr];
    this.#entry = {
      output: (s, buf) => {
        if (streams[s].destroyed) return true;
        const more = streams[s].push(buf);
        if (!more) this.#paused[s] = true;
        return more;
      },
      exit: (status, message, code, sig, dur, reason) => {
        this.#exited = true;
        if (signal) signal.removeEventListener('abort', onAbort);
        for (const s of streams) if (!s.destroyed) s.push(null);
        const r = exitResult(status, message, code, sig, dur, reason);
        if (aborted) reject(abortError(signal));
        else if (r.error) reject(r.error);
        else {
          this.exitCode = r.exitCode;
          this.signalCode = r.signal;
          resolve(r);
        }
      },
    };
    this.#ctx = start(id, req.json);
    register(id, this.#entry);
    if (signal) signal.addEventListener('abort', onAbort, { once: true });
    const exited = () => this.#exited;
    if (req.feed) feedStdin(this.#ctx, req.feed, exited);
    if (req.pipe) {
      this.stdin = new Writable({
        highWaterMark: 64 * 1024,
        write: (chunk, _enc, cb) => {
          if (this.#exited) return cb();
          let p;
          try {
            p = native.execWrite(this.#ctx, chunk);
          } catch (err) {
            return cb(this.#exited ? null : err);
          }
          p.then(
            () => cb(),
            (err) => cb(this.#exited ? null : err),
          );
        },
        final: (cb) => {
          try {
            if (!this.#exited) native.execCloseStdin(this.#ctx);
          } catch (err) {
            return cb(this.#exited ? null : err);
          }
          cb();
        },
        destroy: (err, cb) => {
          try {
            if (!this.#exited) native.execCloseStdin(this.#ctx);
          } catch (_) {}
          cb(err);
        },
      });
    }
  }

  #cancel() {
    if (!this.#exited) native.execCancel(this.#ctx);
  }

  /** True once the process has ended. */
  get exited() {
    return this.#exited;
  }

  /**
   * Sends a signal (name or number, default "SIGTERM" as child_process) to the process group.
   * Returns false if it had already ended. Never waits for stdin, output or the spawn.
   */
  kill(sig = 'SIGTERM') {
    const n = signalNumber(sig);
    if (this.#exited) return false;
    try {
      native.execSignal(this.#ctx, n);
    } catch (err) {
      if (err && err.code === 'FailedPrecondition') return false; // it ended meanwhile
      throw err;
    }
    return true;
  }

  /** Kills the process group; wait() then rejects with LibboxError code "Canceled". */
  cancel() {
    this.#cancel();
  }

  /** Resizes the terminal of a `tty: true` process; without a terminal it throws LibboxError code "FailedPrecondition". */
  resize(rows, cols) {
    checkInt(rows, 'rows', 1);
    checkInt(cols, 'cols', 1);
    native.execResize(this.#ctx, rows, cols);
  }

  /** Resolves with {exitCode, signal, durationMs, oomKilled} once the process ended and all its output was delivered. */
  wait() {
    return this.#done;
  }

  /** Lets the script exit while this process still runs. */
  unref() {
    this.#entry.unref();
    return this;
  }

  /** Undoes unref(). */
  ref() {
    this.#entry.ref();
    return this;
  }
}

// ---- Box ----

const BOX_CREATE = Symbol('libbox.create');

/** One isolated environment. Get one from Box.create or a Runtime. */
class Box {
  #runtime;
  #handle;
  #id;
  #name;
  #closed = false;
  #closing = null;

  /** @internal */
  constructor(token, runtime, handle) {
    if (token !== BOX_CREATE) throw new TypeError('use Box.create(options) or runtime.create/get');
    this.#runtime = runtime;
    this.#handle = handle;
    const info = JSON.parse(native.boxInfo(handle));
    this.#id = info.id;
    this.#name = info.name;
  }

  /** Creates and starts a box on the default runtime ($LIBBOX_HOME or ~/.local/share/libbox). */
  static create(options = {}) {
    return Runtime.default().create(options);
  }

  get id() {
    return this.#id;
  }

  get name() {
    return this.#name;
  }

  get runtime() {
    return this.#runtime;
  }

  get closed() {
    return this.#closed;
  }

  /** @internal: called by Runtime.close, which releases every handle itself. */
  _forget() {
    this.#closed = true;
  }

  #live() {
    if (this.#closed) throw closedError('box');
    return this.#handle;
  }

  #async(fn) {
    let h;
    try {
      h = this.#live();
    } catch (err) {
      return Promise.reject(err);
    }
    return call((id) => fn(h, id));
  }

  /** Starts the box (a running box is left as is). */
  start() {
    return this.#async((h, id) => native.boxStart(h, id)).then(() => undefined);
  }

  /** Stops the box: its processes get SIGTERM, then SIGKILL. */
  stop() {
    return this.#async((h, id) => native.boxStop(h, id)).then(() => undefined);
  }

  /** Stops the box and releases it. Idempotent. */
  close() {
    if (this.#closing) return this.#closing;
    if (this.#closed) return Promise.resolve();
    this.#closing = this.stop().finally(() => {
      if (!this.#closed) {
        this.#closed = true;
        this.#runtime._boxes.delete(this);
        try {
          native.release(this.#handle);
        } catch (_) {}
      }
    });
    return this.#closing;
  }

  /** Describes the box (camelCase keys). */
  info() {
    try {
      return Promise.resolve(camelCase(JSON.parse(native.boxInfo(this.#live()))));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Copies a host file or directory into the box with `docker cp`'s rules (see the README); resolves with {bytes}. */
  copyIn(hostPath, boxPath) {
    checkString(hostPath, 'hostPath', { optional: false, nonEmpty: true });
    checkString(boxPath, 'boxPath', { optional: false, nonEmpty: true });
    return this.#async((h, id) => native.copyIn(h, hostPath, boxPath, id)).then(copyResult);
  }

  /** Copies a box file or directory to the host with `docker cp`'s rules (see the README); resolves with {bytes}. */
  copyOut(boxPath, hostPath) {
    checkString(boxPath, 'boxPath', { optional: false, nonEmpty: true });
    checkString(hostPath, 'hostPath', { optional: false, nonEmpty: true });
    return this.#async((h, id) => native.copyOut(h, boxPath, hostPath, id)).then(copyResult);
  }

  /** The box's files: read, write, list, watch... (see FileSystem). */
  get fs() {
    return new FileSystem(this, (fn) => this.#async(fn));
  }

  /** Resource use now (camelCase keys: cpuTimeNs, memoryUsed, hostRss, ...). */
  stats() {
    return this.#async((h, id) => native.fsCall(h, 'stats', '', id)).then(({ json }) => camelCase(JSON.parse(json)));
  }

  /** Publishes a box port on the host while the box runs: [host, box, protocol] or {host, box, protocol}
   * (host port 0 picks a free one); resolves with the mapping as bound ({host: '127.0.0.1:41234', box, protocol}). */
  publish(mapping) {
    const req = JSON.stringify(portMapping(mapping, 'mapping'));
    return this.#async((h, id) => native.fsCall(h, 'publish', req, id)).then(({ json }) => JSON.parse(json));
  }

  /** Stops publishing a port: its host address as box info shows it ('127.0.0.1:41234'), or {box, protocol}. */
  unpublish(mapping) {
    const m = typeof mapping === 'string' ? { host: mapping } : portMapping(mapping, 'mapping', '');
    const req = JSON.stringify(m);
    return this.#async((h, id) => native.fsCall(h, 'unpublish', req, id)).then(() => undefined);
  }

  /**
   * Freezes the box's files as snapshot `name` (unique in the home); the box may be running (it is paused
   * meanwhile). Resolves with the snapshot (camelCase: name, id, parent, size, written, usedBy, ...).
   * {memory: true} also saves a running VM box's memory: a box created from it (or restored to it) resumes the
   * machine instead of booting (sandbox boxes: code Unsupported).
   */
  snapshot(name, options = {}) {
    checkString(name, 'name', { optional: false, nonEmpty: true });
    checkKeys(options, ['memory'], 'snapshot option');
    checkBool(options.memory, 'memory');
    const req = JSON.stringify({ name, memory: options.memory === true });
    return this.#async((h, id) => native.fsCall(h, 'snapshot', req, id)).then(({ json }) => camelCase(JSON.parse(json || '{}')));
  }

  /** Rolls the stopped box back to snapshot `name` (its own changes are discarded); a running box is refused (FailedPrecondition). */
  restore(name) {
    checkString(name, 'name', { optional: false, nonEmpty: true });
    return this.#async((h, id) => native.fsCall(h, 'restore', name, id)).then(() => undefined);
  }

  /** Writes the box's files as an OCI image layout in `dir` (new or empty); resolves with the image reference ('oci-layout:DIR'). */
  export(dir) {
    checkString(dir, 'dir', { optional: false, nonEmpty: true });
    const abs = path.resolve(dir);
    return this.#async((h, id) => native.fsCall(h, 'export', abs, id)).then(
      ({ json }) => JSON.parse(json || '{}').image || `oci-layout:${abs}`,
    );
  }

  /**
   * Creates and starts a new box whose files start as this box's now (a hidden snapshot is taken, also while it
   * runs). `options` are those of Runtime.create but image, from and isolation.
   */
  clone(options = {}) {
    for (const k of ['image', 'from', 'isolation']) {
      if (options[k] !== undefined) return Promise.reject(new TypeError(`clone takes no ${k} option`));
    }
    try {
      this.#live();
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#runtime.create({ ...options, from: this.#id });
  }

  /** The running execs of the box, also another process's: [{pid, args, uid, user, started, tty}]. */
  processes() {
    return this.#async((h, id) => native.fsCall(h, 'processes', '', id)).then(({ json }) => JSON.parse(json));
  }

  /** Signals an exec's process (or a descendant) by its pid in the box (default SIGKILL). */
  kill(pid, signal = 9) {
    checkInt(pid, 'pid', 1);
    checkInt(signal, 'signal', 0);
    return this.#async((h, id) => native.fsCall(h, 'kill', JSON.stringify({ pid, signal }), id)).then(() => undefined);
  }

  /** @internal: the live handle, for FileSystem. */
  _live() {
    return this.#live();
  }

  /**
   * Runs a command and collects its output:
   * {exitCode, signal, stdout, stderr, stdoutBuffer, stderrBuffer, durationMs, oomKilled}.
   */
  exec(cmd, args = [], options = {}) {
    const req = execRequest(cmd, args, options, false);
    return new Promise((resolve, reject) => {
      const signal = req.signal;
      if (signal && signal.aborted) {
        reject(abortError(signal));
        return;
      }
      let h;
      try {
        h = this.#live();
      } catch (err) {
        reject(err);
        return;
      }
      const chunks = [[], []];
      let ctx;
      let exited = false;
      let aborted = false;
      const onAbort = () => {
        aborted = true;
        if (!exited) native.execCancel(ctx);
      };
      const id = newId();
      const entry = {
        output(s, buf) {
          chunks[s].push(buf);
          return true;
        },
        exit(status, message, code, sig, dur, reason) {
          exited = true;
          if (signal) signal.removeEventListener('abort', onAbort);
          const stdoutBuffer = Buffer.concat(chunks[0]);
          const stderrBuffer = Buffer.concat(chunks[1]);
          const out = { stdout: stdoutBuffer.toString(), stderr: stderrBuffer.toString(), stdoutBuffer, stderrBuffer };
          const r = exitResult(status, message, code, sig, dur, reason);
          if (aborted) reject(abortError(signal));
          else if (r.error) reject(Object.assign(r.error, out));
          else resolve({ exitCode: r.exitCode, signal: r.signal, ...out, durationMs: r.durationMs, oomKilled: r.oomKilled });
        },
      };
      try {
        ctx = native.execStart(h, this.#runtime._handle, req.json, id, true, true, true);
      } catch (err) {
        reject(err);
        return;
      }
      register(id, entry);
      if (signal) signal.addEventListener('abort', onAbort, { once: true });
      if (req.feed) feedStdin(ctx, req.feed, () => exited);
    });
  }

  /**
   * Runs the image's command as `docker run IMAGE [ARG...]` does: its
   * Entrypoint followed by args, or by its Cmd when args is empty. Options
   * and result as for exec.
   */
  execDefault(args = [], options = {}) {
    return this.exec(null, args, options);
  }

  /** Starts a command and returns a Process with streams; throws LibboxError if the box cannot run it. */
  spawn(cmd, args = [], options = {}) {
    const req = execRequest(cmd, args, options, true);
    if (req.signal && req.signal.aborted) throw abortError(req.signal);
    const h = this.#live();
    return new Process(this, (id, json) => native.execStart(h, this.#runtime._handle, json, id, true, true), req);
  }
}

function copyResult({ json }) {
  return json ? JSON.parse(json) : {};
}

function imageInfo(doc) {
  const c = doc.config || {};
  return {
    ref: doc.ref,
    id: doc.id,
    root: doc.root,
    size: doc.size,
    created: doc.created,
    config: {
      env: c.env || [],
      workingDir: c.working_dir || '',
      user: c.user || '',
      entrypoint: c.entrypoint || [],
      cmd: c.cmd || [],
    },
  };
}

// ---- Runtime ----

let defaultRuntime = null;

// Runtime options: option -> [runtime options JSON field, LIBBOX_* variable].
const RUNTIME_ENV = {
  bootTimeout: ['boot_timeout', 'LIBBOX_BOOT_TIMEOUT'], // seconds, or a string such as "2m"
  accel: ['accel', 'LIBBOX_ACCEL'],
  kernel: ['kernel', 'LIBBOX_KERNEL'],
  kernelModules: ['kernel_modules', 'LIBBOX_KERNEL_MODULES'],
  agent: ['agent', 'LIBBOX_AGENT'],
  vmDebug: ['vm_debug', 'LIBBOX_VM_DEBUG'],
  registryAuth: ['registry_auth', 'LIBBOX_REGISTRY_AUTH'],
  insecureRegistries: ['insecure_registries', 'LIBBOX_INSECURE_REGISTRIES'],
  registryMirrors: ['registry_mirrors', 'LIBBOX_REGISTRY_MIRRORS'],
};

/** A libbox home directory and the boxes opened from it. */
class Runtime {
  #handle;
  #closed = false;
  #closing = null;

  /**
   * Opens a runtime on `home` (default $LIBBOX_HOME or ~/.local/share/libbox).
   * Each option left undefined takes its LIBBOX_* variable, read here (the
   * library sees the environment as it was when it was loaded).
   */
  constructor(options = {}) {
    checkKeys(options, ['home', ...Object.keys(RUNTIME_ENV)], 'runtime option');
    checkString(options.home, 'home', { nonEmpty: true });
    const opts = options.home ? { home: options.home } : {};
    for (const [key, [field, variable]] of Object.entries(RUNTIME_ENV)) {
      let v = options[key];
      if (v === undefined) {
        const env = process.env[variable];
        if (!env) continue;
        v = key === 'vmDebug' ? env === '1' : env;
      } else if (key === 'vmDebug') {
        checkBool(v, key);
      } else if (key === 'bootTimeout' && typeof v === 'number') {
        if (!(v > 0 && Number.isFinite(v))) throw new RangeError('bootTimeout must be a positive number of seconds');
      } else {
        checkString(v, key, { nonEmpty: true });
      }
      opts[field] = v;
    }
    this._boxes = new Set();
    this.#handle = native.runtimeOpen(JSON.stringify(opts));
  }

  /** The runtime Box.create uses, opened on first use with $LIBBOX_HOME when set. */
  static default() {
    if (defaultRuntime === null || defaultRuntime.closed) {
      defaultRuntime = new Runtime(process.env.LIBBOX_HOME ? { home: process.env.LIBBOX_HOME } : {});
    }
    return defaultRuntime;
  }

  get closed() {
    return this.#closed;
  }

  /** @internal */
  get _handle() {
    if (this.#closed) throw closedError('runtime');
    return this.#handle;
  }

  #adopt(handle) {
    const box = new Box(BOX_CREATE, this, handle);
    this._boxes.add(box);
    return box;
  }

  /** Creates a box (pulling its image if needed) and starts it. */
  create(options = {}) {
    const json = boxOptionsJSON(options);
    const progress = options.onProgress;
    if (this.#closed) return Promise.reject(closedError('runtime'));
    const h = this.#handle;
    return call((id) => native.boxCreate(h, json, id), progress).then(async ({ handle }) => {
      let box;
      try {
        box = this.#adopt(handle);
      } catch (err) {
        native.release(handle);
        throw err;
      }
      try {
        await box.start();
      } catch (err) {
        await box.close().catch(() => {});
        if (options.autoRemove !== false) {
          await this.remove(box.id, { force: true }).catch(() => {});
        }
        throw err;
      }
      return box;
    });
  }

  /** Opens an existing box by id or name (not started). */
  get(idOrName) {
    checkString(idOrName, 'idOrName', { optional: false, nonEmpty: true });
    try {
      return Promise.resolve(this.#adopt(native.boxGet(this._handle, idOrName)));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Lists every box of this home (camelCase info objects). */
  list() {
    try {
      return Promise.resolve(JSON.parse(native.boxList(this._handle) || '[]').map(camelCase));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** The snapshots of this home, oldest first (camelCase: name, id, box, isolation, image, parent, size, usedBy). */
  snapshots() {
    try {
      return Promise.resolve(JSON.parse(native.snapshots(this._handle) || '[]').map(camelCase));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Removes a snapshot; refused (code FailedPrecondition) while a box or snapshot sits on it unless {force: true}. */
  removeSnapshot(name, options = {}) {
    checkString(name, 'name', { optional: false, nonEmpty: true });
    checkKeys(options, ['force'], 'removeSnapshot option');
    checkBool(options.force, 'force');
    if (this.#closed) return Promise.reject(closedError('runtime'));
    const h = this.#handle;
    return call((id) => native.snapshotRemove(h, name, options.force === true, id)).then(() => undefined);
  }

  /** Removes a box and its files; a running box needs {force: true}. */
  remove(idOrName, options = {}) {
    checkString(idOrName, 'idOrName', { optional: false, nonEmpty: true });
    checkKeys(options, ['force'], 'remove option');
    checkBool(options.force, 'force');
    if (this.#closed) return Promise.reject(closedError('runtime'));
    const h = this.#handle;
    return call((id) => native.boxRemove(h, idOrName, options.force === true, id)).then(() => undefined);
  }

  /**
   * Pulls (or refreshes) an image: 'alpine:3.20', 'oci-layout:/dir[:tag]',
   * 'docker-archive:/file.tar' or the builtin 'busybox'. onProgress gets
   * {layer, done, total} on the JS thread; platform ('linux/arm64') picks
   * from a multi-arch image; signal (an AbortSignal) stops the download
   * (what was fetched is kept, the next pull resumes it).
   */
  pull(ref, options = {}) {
    checkString(ref, 'ref', { optional: false, nonEmpty: true });
    checkKeys(options, ['onProgress', 'platform', 'signal'], 'pull option');
    if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
      throw new TypeError('onProgress must be a function');
    }
    checkString(options.platform, 'platform', { nonEmpty: true });
    const signal = options.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw new TypeError('signal must be an AbortSignal');
    }
    if (this.#closed) return Promise.reject(closedError('runtime'));
    if (signal && signal.aborted) return Promise.reject(abortError(signal));
    const h = this.#handle;
    const json = JSON.stringify({ ref, platform: options.platform });
    let pull = 0n;
    let ended = false;
    const onAbort = () => {
      if (!ended) native.pullCancel(pull);
    };
    const done = call((id) => {
      pull = native.imagePullAsync(h, json, id);
    }, options.onProgress).finally(() => {
      ended = true;
      if (signal) signal.removeEventListener('abort', onAbort);
      if (pull) native.release(pull);
    });
    if (signal) signal.addEventListener('abort', onAbort, { once: true });
    return done.then(
      ({ json: doc }) => imageInfo(JSON.parse(doc || '{}')),
      (err) => {
        throw signal && signal.aborted ? abortError(signal) : err;
      },
    );
  }

  /**
   * Deletes the images no name refers to any more (a moved tag, a forced
   * removal) once no box uses them, the cached layers no image needs and
   * what interrupted pulls left; resolves with {roots, blobs, bytes}.
   */
  pruneImages() {
    if (this.#closed) return Promise.reject(closedError('runtime'));
    const h = this.#handle;
    return call((id) => native.imagePrune(h, id)).then(({ json }) => JSON.parse(json || '{}'));
  }

  /** The images in this runtime's store. */
  images() {
    try {
      return Promise.resolve(JSON.parse(native.images(this._handle) || '[]').map(imageInfo));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Builds the VM template of `image` for vm boxes with these `cpus` and
   * `memoryMib` ({cpus, memoryMib, platform}): they then start by restoring
   * a booted machine instead of booting (LIBBOX_VM_TEMPLATES=0 turns that
   * off). Resolves once the template exists; it boots one VM to build it.
   */
  warm(image = 'busybox', options = {}) {
    checkString(image, 'image', { optional: false, nonEmpty: true });
    checkKeys(options, ['cpus', 'memoryMib', 'platform'], 'warm option');
    const opts = {};
    for (const [key, field] of [['cpus', 'cpus'], ['memoryMib', 'memory_mib']]) {
      const v = options[key];
      if (v === undefined) continue;
      if (!Number.isInteger(v) || v <= 0) throw new TypeError(`${key} must be a positive integer`);
      opts[field] = v;
    }
    checkString(options.platform, 'platform', { nonEmpty: true });
    if (options.platform !== undefined) opts.platform = options.platform;
    if (this.#closed) return Promise.reject(closedError('runtime'));
    const h = this.#handle;
    return call((id) => native.warm(h, image, JSON.stringify(opts), id)).then(() => undefined);
  }

  /** Removes an image; refused (code FailedPrecondition) while a box uses it unless {force: true}. */
  removeImage(ref, options = {}) {
    checkString(ref, 'ref', { optional: false, nonEmpty: true });
    checkKeys(options, ['force'], 'removeImage option');
    checkBool(options.force, 'force');
    if (this.#closed) return Promise.reject(closedError('runtime'));
    const h = this.#handle;
    return call((id) => native.imageRemove(h, ref, options.force === true, id)).then(() => undefined);
  }

  /** Cancels running execs, stops boxes that are not detached and releases every handle. Idempotent. */
  close() {
    if (this.#closing) return this.#closing;
    this.#closed = true;
    for (const box of this._boxes) box._forget();
    this._boxes.clear();
    // Runs on a worker thread (queued work keeps the event loop alive).
    this.#closing = native.runtimeClose(this.#handle);
    return this.#closing;
  }
}

/**
 * Checks what this host needs to run boxes (QEMU, KVM, the guest kernel,
 * /dev/net/tun, user namespaces, cgroups, free space) without starting one.
 * Resolves to {checks: [{name, status: 'ok'|'warn'|'fail', detail, fix, neededBy}],
 * isolation, ready, runs}. Runs on a worker thread.
 */
async function doctor(options = {}) {
  checkKeys(options, ['home'], 'doctor option');
  checkString(options.home, 'home', { nonEmpty: true });
  const r = JSON.parse(await native.doctor(JSON.stringify(options.home ? { home: options.home } : {})));
  return {
    checks: (r.checks || []).map(c => ({
      name: c.name, status: c.status, detail: c.detail, fix: c.fix || '', neededBy: c.needed_by || [],
    })),
    isolation: r.isolation,
    ready: r.ready,
    runs: r.runs || [],
  };
}

/**
 * The files of a running box (`box.fs`), without host files or commands.
 * Paths are absolute box paths; symlinks resolve inside the box root as in
 * a chroot; `..` is refused (code InvalidArgument). Every method returns a
 * Promise; errors carry the vocabulary's `code` (NotFound, ...).
 */
class FileSystem {
  #box;
  #async;

  constructor(box, async) {
    this.#box = box;
    this.#async = async;
  }

  #call(name, req) {
    return this.#async((h, id) => native.fsCall(h, name, JSON.stringify(req), id)).then(({ json }) =>
      json ? JSON.parse(json) : undefined,
    );
  }

  /** The bytes of a file (a Buffer): all, or `length` bytes from `offset`. */
  read(path, { offset = 0, length } = {}) {
    checkString(path, 'path', { optional: false, nonEmpty: true });
    checkInt(offset, 'offset', 0);
    checkInt(length, 'length', 0);
    const req = JSON.stringify(length === undefined ? { path, offset } : { path, offset, length });
    const chunks = [];
    return new Promise((resolve, reject) => {
      let h;
      try {
        h = this.#box._live();
      } catch (err) {
        reject(err);
        return;
      }
      const id = newId();
      try {
        native.fsRead(h, req, id);
      } catch (err) {
        reject(err);
        return;
      }
      register(id, {
        data(buf) {
          chunks.push(buf);
        },
        complete(status, message) {
          if (status === 0) resolve(Buffer.concat(chunks));
          else reject(fromStatus(status, message));
        },
      });
    });
  }

  /** The content of a file decoded as UTF-8 (or `encoding`). */
  readText(path, { encoding = 'utf8' } = {}) {
    return this.read(path).then((b) => b.toString(encoding));
  }

  #write(path, data, opts, append) {
    checkString(path, 'path', { optional: false, nonEmpty: true });
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    if (!Buffer.isBuffer(buf) && !(buf instanceof Uint8Array)) {
      return Promise.reject(new TypeError('data must be a string, Buffer or Uint8Array'));
    }
    const req = writeRequest(opts);
    req.path = path;
    if (append) req.append = true;
    const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
    return this.#async((h, id) => native.fsWrite(h, JSON.stringify(req), b, id)).then(() => b.length);
  }

  /**
   * Replaces (or creates) a file atomically; resolves with the bytes written.
   * Options: mode (0o644), makeParents (true), user (the box's default).
   */
  write(path, data, opts = {}) {
    return this.#write(path, data, opts, false);
  }

  /** Appends to a file (created when missing). */
  append(path, data, opts = {}) {
    return this.#write(path, data, opts, true);
  }

  /** Writes several [path, data] files in one call, each atomically. */
  writeMany(files, opts = {}) {
    if (!Array.isArray(files)) return Promise.reject(new TypeError('files must be an array of [path, data]'));
    const req = writeRequest(opts);
    req.files = files.map(([path, data]) => {
      checkString(path, 'path', { optional: false, nonEmpty: true });
      return { path, data: Buffer.from(data).toString('base64') };
    });
    return this.#call('write_many', req).then((r) => r.files);
  }

  /** Entries of a directory down to `depth` levels, sorted by path; symlinks are not followed. */
  list(path, { depth = 1 } = {}) {
    checkString(path, 'path', { optional: false, nonEmpty: true });
    checkInt(depth, 'depth', 0);
    return this.#call('list', { path, depth }).then((l) => l.map(fileInfo));
  }

  /** {name, path, type, size, mode, uid, gid, mtime, linkTarget} of a path (a final symlink itself). */
  stat(path) {
    checkString(path, 'path', { optional: false, nonEmpty: true });
    return this.#call('stat', { path }).then(fileInfo);
  }

  exists(path) {
    checkString(path, 'path', { optional: false, nonEmpty: true });
    return this.#call('exists', { path }).then((r) => r.exists);
  }

  /** Creates a directory; with parents (the default) like `mkdir -p`. */
  mkdir(path, { parents = true } = {}) {
    checkString(path, 'path', { optional: false, nonEmpty: true });
    return this.#call('mkdir', { path, parents: !!parents }).then(() => undefined);
  }

  /** Removes a file, symlink or directory (non-empty ones need recursive). */
  remove(path, { recursive = false } = {}) {
    checkString(path, 'path', { optional: false, nonEmpty: true });
    return this.#call('remove', { path, recursive: !!recursive }).then(() => undefined);
  }

  rename(src, dst) {
    checkString(src, 'src', { optional: false, nonEmpty: true });
    checkString(dst, 'dst', { optional: false, nonEmpty: true });
    return this.#call('rename', { src, dst }).then(() => undefined);
  }

  /**
   * Watches a directory; resolves once the watch is in place with a Watcher:
   * an async iterator of {type, path, isDir} (type "overflow": events were
   * lost, rescan). `await watcher.close()` ends it.
   */
  watch(path, { recursive = false } = {}) {
    checkString(path, 'path', { optional: false, nonEmpty: true });
    let h;
    try {
      h = this.#box._live();
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      const id = newId();
      let handle;
      try {
        handle = native.fsWatch(h, JSON.stringify({ path, recursive: !!recursive }), id);
      } catch (err) {
        reject(err);
        return;
      }
      const watcher = new Watcher(handle);
      register(id, {
        data(buf) {
          const ev = JSON.parse(buf.toString('utf8'));
          if (ev.type === 'ready') resolve(watcher);
          else watcher._push({ type: ev.type, path: ev.path, isDir: !!ev.is_dir });
        },
        complete(status, message) {
          const err = status === 0 ? null : fromStatus(status, message);
          watcher._end(err);
          reject(err || new LibboxError('Canceled', 'the watch ended before it was in place'));
        },
      });
    });
  }
}

function writeRequest(opts) {
  if (!isPlainObject(opts)) throw new TypeError('options must be an object');
  const { mode = 0o644, makeParents = true, user } = opts;
  checkInt(mode, 'mode', 0);
  if (mode > 0o7777) throw new TypeError('mode must be permission bits (0 to 0o7777)');
  const req = { mode, make_parents: !!makeParents };
  if (user !== undefined) req.user = String(user);
  return req;
}

function fileInfo(fi) {
  return {
    name: fi.name,
    path: fi.path,
    type: fi.type,
    size: fi.size,
    mode: fi.mode,
    uid: fi.uid,
    gid: fi.gid,
    mtime: new Date(fi.mtime),
    linkTarget: fi.link_target || '',
  };
}

/** An active watch: `for await (const ev of watcher)`; ends after close() or when the box stops (rejects). */
class Watcher {
  #handle;
  #queue = [];
  #waiters = [];
  #ended = false;
  #error = null;
  #closed = false;
  #done;
  #resolveDone;

  constructor(handle) {
    this.#handle = handle;
    this.#done = new Promise((r) => (this.#resolveDone = r));
  }

  _push(ev) {
    const w = this.#waiters.shift();
    if (w) w.resolve({ value: ev, done: false });
    else this.#queue.push(ev);
  }

  _end(err) {
    this.#ended = true;
    this.#error = this.#closed ? null : err;
    try {
      native.release(this.#handle);
    } catch (_) {}
    for (const w of this.#waiters.splice(0)) {
      if (this.#error) w.reject(this.#error);
      else w.resolve({ value: undefined, done: true });
    }
    this.#resolveDone();
  }

  next() {
    if (this.#queue.length > 0) return Promise.resolve({ value: this.#queue.shift(), done: false });
    if (this.#ended) {
      if (this.#error) {
        const err = this.#error;
        this.#error = null;
        return Promise.reject(err);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  return() {
    return this.close().then(() => ({ value: undefined, done: true }));
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /** Ends the watch and waits for its end. Idempotent. */
  close() {
    this.#closed = true;
    if (!this.#ended) {
      try {
        native.fsWatchClose(this.#handle);
      } catch (_) {}
    }
    return this.#done;
  }
}

module.exports = {
  Box,
  doctor,
  Runtime,
  Process,
  FileSystem,
  Watcher,
  LibboxError,
  AbortError,
  /** Version of the loaded libbox.so. */
  version: native.version(),
  /** ABI version of the loaded libbox.so (checked against the addon on load). */
  abiVersion: native.abiVersion,
  /** Live library handles of this process (0 once every runtime is closed). */
  liveHandles: () => Number(native.liveHandles()),
};
// `import libbox from 'libbox'` from transpiled TypeScript without esModuleInterop.
module.exports.default = module.exports;
