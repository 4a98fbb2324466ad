// Types of the libbox Node package: run commands concurrently in isolated
// Linux boxes (micro-VMs or namespace sandboxes) over libbox.so.
/// <reference types="node" />
import { Readable, Writable } from 'node:stream';

/** The error classes of libbox, as `LibboxError.code`. */
export type ErrorCode =
  | 'NotFound'
  | 'AlreadyExists'
  | 'InvalidArgument'
  | 'FailedPrecondition'
  | 'Unavailable'
  | 'DeadlineExceeded'
  | 'Canceled'
  | 'Internal'
  | 'Unsupported';

/** An error reported by libbox; `message` says what to do. */
export class LibboxError extends Error {
  readonly name: 'LibboxError';
  readonly code: ErrorCode;
  /** The C status code (BOX_E_*), 1..9. */
  readonly status: number;
  /**
   * Why an exec's command never ran (exec() and spawn() rejections only):
   * "not_found" (a shell exits 127), "not_executable" (126),
   * "bad_working_dir", "bad_user". Read it instead of the message.
   */
  reason?: 'not_found' | 'not_executable' | 'bad_working_dir' | 'bad_user';
  /** Output collected before an exec failed (exec() rejections only). */
  stdout?: string;
  stderr?: string;
  stdoutBuffer?: Buffer;
  stderrBuffer?: Buffer;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown });
}

/** Rejection of an operation whose AbortSignal fired (the process group was killed). */
export class AbortError extends Error {
  readonly name: 'AbortError';
  readonly code: 'ABORT_ERR';
  constructor(message?: string, options?: { cause?: unknown });
}

export interface Volume {
  /** Absolute host directory. */
  host: string;
  /** Absolute path inside the box. */
  box: string;
  readOnly?: boolean;
}

export interface PullProgress {
  layer: string;
  done: number;
  /** -1 when unknown. */
  total: number;
}

/** A box port published on the host: host "IP:PORT", ":PORT", "PORT" or a port number (on 127.0.0.1; 0 picks a free port). */
export interface PortMapping {
  host?: string | number;
  box?: number;
  protocol?: 'tcp' | 'udp';
}

export interface BoxOptions {
  /** Image reference; default "busybox" (builtin, no network). */
  image?: string;
  /** Clone: a snapshot's name or a box's id or name; the new box's files start as its (image and isolation follow it). */
  from?: string;
  name?: string;
  /** "vm" (the library's default) or "sandbox" (Linux namespaces). */
  isolation?: 'vm' | 'sandbox';
  cpus?: number;
  memoryMib?: number;
  env?: Record<string, string>;
  cwd?: string;
  volumes?: Volume[];
  network?: boolean;
  /** With network: only these destinations (names, *.wildcards, IPs, CIDRs, "host", each with :PORT); default the public internet. */
  allowNet?: string[];
  /** With network: never these (wins over allowNet). */
  denyNet?: string[];
  /** With network: published ports, [host, box] / [host, box, "udp"] or objects; host 0 picks a free port. */
  ports?: Array<[number | string, number] | [number | string, number, 'tcp' | 'udp'] | PortMapping>;
  /** With network: names the box's DNS answers (name to IPv4). */
  hosts?: Record<string, string>;
  /** With network: upstream DNS resolvers (default: the host's). */
  dns?: string[];
  /** Remove the box's files when it stops. Default true. */
  autoRemove?: boolean;
  /** Let the box outlive this process. Default false. */
  detach?: boolean;
  /** Called during image pulls. */
  onProgress?: (progress: PullProgress) => void;
  /** "os/arch[/variant]" of a multi-arch image; default the host's. */
  platform?: string;
}

/** Each option left undefined takes its LIBBOX_* variable (see the README). */
export interface RuntimeOptions {
  /** Default $LIBBOX_HOME or ~/.local/share/libbox. */
  home?: string;
  /** How long a starting box may take to answer: seconds, or a string such as "2m". */
  bootTimeout?: number | string;
  /** VM accelerator rung on Linux (default: probed). */
  accel?: 'kvm' | 'tcg' | 'microvm-kvm' | 'pc-kvm' | 'pc-tcg';
  /** Guest kernel of VM boxes and its modules directory. */
  kernel?: string;
  kernelModules?: string;
  /** A static box-agent binary to run instead of the embedded one. */
  agent?: string;
  /** Log the guest kernel and agent boot steps to each VM box's console log. */
  vmDebug?: boolean;
  /** "registry=user:password[,...]". */
  registryAuth?: string;
  /** "host[:port][,...]" reachable over plain HTTP or unverified TLS. */
  insecureRegistries?: string;
  /** "registry=host[:port][,...]", mirrors tried in order. */
  registryMirrors?: string;
}

export interface ExecOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** "root", "1000", "1000:1000" or a uid. */
  user?: string | number;
  /** Data written to stdin, which is then closed. Without it stdin is /dev/null. */
  stdin?: string | Uint8Array;
  /** Kill the process group after this long; rejects with code "DeadlineExceeded". */
  timeoutMs?: number;
  /** Aborting kills the process group; rejects with AbortError. */
  signal?: AbortSignal;
  tty?: boolean;
  rows?: number;
  cols?: number;
}

export interface SpawnOptions extends Omit<ExecOptions, 'stdin'> {
  /** "pipe" (default: `process.stdin` is a Writable), "ignore"/null (/dev/null), or data to write then close. */
  stdin?: 'pipe' | 'ignore' | null | string | Uint8Array;
}

export interface ExitResult {
  /** 0..255, or null when a signal ended the process. */
  exitCode: number | null;
  /** The killing signal's name ("SIGTERM", as child_process), or null. */
  signal: NodeJS.Signals | number | null;
  durationMs: number;
  /** The kernel's OOM killer ended the process at the box's memory limit (signal "SIGKILL"; known for sandbox boxes with a memory limit). */
  oomKilled: boolean;
}

export interface ExecResult extends ExitResult {
  stdout: string;
  stderr: string;
  stdoutBuffer: Buffer;
  stderrBuffer: Buffer;
}

/** Box info, with the library's keys in camelCase. */
export interface BoxInfo {
  id: string;
  name: string;
  image: string;
  isolation: 'vm' | 'sandbox';
  state: 'created' | 'running' | 'stopped';
  createdAt?: string;
  pid?: number;
  cpus?: number;
  memoryMib?: number;
  detach?: boolean;
  autoRemove?: boolean;
  [key: string]: unknown;
}

/** A command started by Box.spawn. */
export class Process {
  private constructor();
  /** Output of the process; slow consumers hold the process back (backpressure). */
  readonly stdout: Readable;
  readonly stderr: Readable;
  /** null unless stdin is "pipe". end() it to send EOF. */
  readonly stdin: Writable | null;
  /** Set once the process ended normally. */
  readonly exitCode: number | null;
  /** The killing signal's name ("SIGTERM"), as child_process. */
  readonly signalCode: NodeJS.Signals | number | null;
  readonly exited: boolean;
  /** Signals the process group (default "SIGTERM"); false if it had already ended. */
  kill(signal?: NodeJS.Signals | number): boolean;
  /** Kills the process group; wait() rejects with code "Canceled". */
  cancel(): void;
  /** Throws LibboxError code "FailedPrecondition" when the process has no terminal. */
  resize(rows: number, cols: number): void;
  /** Resolves once the process ended and all its output was delivered; rejects with LibboxError or AbortError. */
  wait(): Promise<ExitResult>;
  /** A running process keeps the script alive; unref() lets it exit anyway. */
  unref(): this;
  ref(): this;
}

/** A snapshot of a box's files (Box.snapshot, Runtime.snapshots); keys in camelCase. */
export interface SnapshotInfo {
  name: string;
  id: string;
  box?: string;
  boxName?: string;
  isolation: 'vm' | 'sandbox';
  image?: string;
  imageId?: string;
  /** The snapshot this one sits on, if any. */
  parent?: string;
  createdAt?: string;
  /** Bytes its own layer takes on disk. */
  size?: number;
  /** Bytes copied to take it. */
  written?: number;
  /** "box NAME" / "snapshot NAME" entries sitting on it. */
  usedBy?: string[];
  [key: string]: unknown;
}

/** One isolated environment. */
export class Box {
  private constructor();
  /** Creates and starts a box on the default runtime. */
  static create(options?: BoxOptions): Promise<Box>;
  readonly id: string;
  readonly name: string;
  readonly runtime: Runtime;
  readonly closed: boolean;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Stops the box and releases it. Idempotent. */
  close(): Promise<void>;
  info(): Promise<BoxInfo>;
  copyIn(hostPath: string, boxPath: string): Promise<{ bytes?: number }>;
  copyOut(boxPath: string, hostPath: string): Promise<{ bytes?: number }>;
  /** The box's files (read, write, list, watch ...). */
  readonly fs: FileSystem;
  /** Resource use now (keys in camelCase: cpuTimeNs, memoryUsed, hostRss, boot ...). */
  stats(): Promise<BoxStats>;
  /** Publishes a box port on the host while the box runs (host port 0 picks a free one); resolves with the mapping as bound. */
  publish(mapping: PortMapping | [string | number, number, ('tcp' | 'udp')?]): Promise<{ host: string; box: number; protocol: 'tcp' | 'udp' }>;
  /** Stops publishing a port: its host address as box info shows it, or {box, protocol}. */
  unpublish(mapping: string | PortMapping): Promise<void>;
  /** Freezes the box's files as snapshot `name` (also while it runs); { memory: true } rejects with code "Unsupported" for now. */
  snapshot(name: string, options?: { memory?: boolean }): Promise<SnapshotInfo>;
  /** Rolls the stopped box back to a snapshot; a running box is refused (code "FailedPrecondition"). */
  restore(name: string): Promise<void>;
  /** Writes the box's files as an OCI image layout in dir; resolves with "oci-layout:DIR", an image reference. */
  export(dir: string): Promise<string>;
  /** Creates and starts a box whose files start as this box's now. */
  clone(options?: Omit<BoxOptions, 'image' | 'from' | 'isolation'>): Promise<Box>;
  /** The running execs of the box, also those another process started. */
  processes(): Promise<ProcessInfo[]>;
  /** Signals an exec's process (or a descendant) by its pid in the box; default SIGKILL (9). */
  kill(pid: number, signal?: number): Promise<void>;
  /** Runs a command and collects its output. Wrong argument types throw TypeError synchronously. */
  exec(cmd: string, args?: string[], options?: ExecOptions): Promise<ExecResult>;
  /** Runs the image's command as `docker run IMAGE [ARG...]` does (Entrypoint + args, or + Cmd). */
  execDefault(args?: string[], options?: ExecOptions): Promise<ExecResult>;
  /** Starts a command with streams. Throws LibboxError if the box cannot run it. */
  spawn(cmd: string, args?: string[], options?: SpawnOptions): Process;
}

/** A libbox home directory and the boxes opened from it. */
export class Runtime {
  constructor(options?: RuntimeOptions);
  /** The runtime Box.create uses ($LIBBOX_HOME when set). */
  static default(): Runtime;
  readonly closed: boolean;
  /** Creates a box and starts it. */
  create(options?: BoxOptions): Promise<Box>;
  /** Opens an existing box by id or name. */
  get(idOrName: string): Promise<Box>;
  list(): Promise<BoxInfo[]>;
  /** A running box needs { force: true }. */
  remove(idOrName: string, options?: { force?: boolean }): Promise<void>;
  /** Pulls (or refreshes) an image; onProgress is called on the JS thread. */
  pull(
    ref: string,
    options?: { onProgress?: (progress: PullProgress) => void; platform?: string; signal?: AbortSignal },
  ): Promise<ImageInfo>;
  /** Deletes unreferenced images no box uses, unneeded layers and interrupted pulls' leftovers. */
  pruneImages(): Promise<{ roots: number; blobs: number; bytes: number }>;
  /** The images in this runtime's store. */
  images(): Promise<ImageInfo[]>;
  /** Builds the VM template of an image: vm boxes of it then start by restoring a booted machine. */
  warm(image?: string, options?: { cpus?: number; memoryMib?: number; platform?: string }): Promise<void>;
  /** Refused (code 'FailedPrecondition') while a box uses the image, unless { force: true }. */
  removeImage(ref: string, options?: { force?: boolean }): Promise<void>;
  /** The snapshots of this home, oldest first. */
  snapshots(): Promise<SnapshotInfo[]>;
  /** Refused (code 'FailedPrecondition') while a box or snapshot sits on it, unless { force: true }. */
  removeSnapshot(name: string, options?: { force?: boolean }): Promise<void>;
  /** Cancels running execs, stops boxes that are not detached, releases every handle. Idempotent. */
  close(): Promise<void>;
}

export interface ImageInfo {
  ref: string;
  /** "sha256:..." */
  id: string;
  /** The unpacked root filesystem (read-only). */
  root: string;
  size: number;
  created: string;
  config: { env: string[]; workingDir: string; user: string; entrypoint: string[]; cmd: string[] };
}

/** Version of the loaded libbox.so. */
/** One finding of doctor(). */
export interface DoctorCheck {
  name: string;
  status: 'ok' | 'warn' | 'fail';
  detail: string;
  /** How to fix it ('' when ok). */
  fix: string;
  /** Isolations that cannot run while this check fails. */
  neededBy: Array<'vm' | 'sandbox'>;
}

export interface DoctorReport {
  checks: DoctorCheck[];
  /** The default isolation, and whether boxes of it can run here. */
  isolation: 'vm' | 'sandbox';
  ready: boolean;
  /** Every isolation whose needed checks passed. */
  runs: Array<'vm' | 'sandbox'>;
}

/** Checks what this host needs to run boxes, without starting one (runs on a worker thread). */
export function doctor(options?: { home?: string }): Promise<DoctorReport>;

export interface FileInfo {
  name: string;
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  /** Permission bits as chmod takes them (0o644). */
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
  linkTarget: string;
}

export interface WriteOptions {
  mode?: number;
  makeParents?: boolean;
  user?: string | number;
}

export interface WatchEvent {
  type: 'create' | 'write' | 'remove' | 'rename' | 'chmod' | 'overflow';
  path: string;
  isDir: boolean;
}

/** An active watch: an async iterator of events; close() ends it. */
export class Watcher implements AsyncIterableIterator<WatchEvent> {
  private constructor();
  next(): Promise<IteratorResult<WatchEvent>>;
  return(): Promise<IteratorResult<WatchEvent>>;
  [Symbol.asyncIterator](): AsyncIterableIterator<WatchEvent>;
  close(): Promise<void>;
}

/** The files of a running box; paths are absolute box paths. */
export class FileSystem {
  private constructor();
  read(path: string, options?: { offset?: number; length?: number }): Promise<Buffer>;
  readText(path: string, options?: { encoding?: BufferEncoding }): Promise<string>;
  write(path: string, data: string | Uint8Array, options?: WriteOptions): Promise<number>;
  append(path: string, data: string | Uint8Array, options?: WriteOptions): Promise<number>;
  writeMany(files: Array<[string, string | Uint8Array]>, options?: WriteOptions): Promise<number>;
  list(path: string, options?: { depth?: number }): Promise<FileInfo[]>;
  stat(path: string): Promise<FileInfo>;
  exists(path: string): Promise<boolean>;
  mkdir(path: string, options?: { parents?: boolean }): Promise<void>;
  remove(path: string, options?: { recursive?: boolean }): Promise<void>;
  rename(src: string, dst: string): Promise<void>;
  watch(path: string, options?: { recursive?: boolean }): Promise<Watcher>;
}

export interface BoxStats {
  time: string;
  cpuTimeNs: number;
  cpuPercent: number;
  guestCpuTimeNs: number;
  memoryTotal: number;
  memoryUsed: number;
  hostRss: number;
  diskBytes: number;
  processes: number;
  execsRunning: number;
  execsServed: number;
  network: boolean;
  netRxBytes: number;
  netTxBytes: number;
  uptimeNs: number;
  boot?: Array<{ name: string; duration_ns: number }>;
}

export interface ProcessInfo {
  pid: number;
  args: string[];
  uid: number;
  user?: string;
  started: string;
  tty: boolean;
}

export const version: string;
/** ABI version of the loaded libbox.so. */
export const abiVersion: number;
/** Live library handles of this process (0 once every runtime is closed). */
export function liveHandles(): number;

declare const libbox: {
  Box: typeof Box;
  Runtime: typeof Runtime;
  Process: typeof Process;
  FileSystem: typeof FileSystem;
  Watcher: typeof Watcher;
  LibboxError: typeof LibboxError;
  AbortError: typeof AbortError;
  doctor: typeof doctor;
  version: string;
  abiVersion: number;
  liveHandles: typeof liveHandles;
};
export default libbox;
