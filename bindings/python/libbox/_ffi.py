"""ctypes binding of include/libbox.h: loading, signatures, and callbacks.

Loads libbox.so once (``LIBBOX_LIBRARY``, else ``_lib/libbox.so`` next to
this file, else a source checkout's ``build/lib/libbox.so``), checks its ABI
version, and owns the C callbacks. The callbacks are module-level CFUNCTYPE
objects that live as long as the process, so none can be collected while
the library may call it; ``user_data`` is a key into the tables below.

Callbacks (completions, pull progress, file reads and watches) run on
library threads. They must never block, never touch an event loop except
through ``call_soon_threadsafe``, and never raise: a callback whose loop has
closed is dropped silently. Exec events need no callback: they come from an
``EventQueue`` the loop drains on its own thread.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import itertools
import os
import threading
import weakref
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    byref,
    c_char_p,
    c_int32,
    c_int64,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Any, Callable, NamedTuple, Optional, Protocol

from .errors import Error, error_from_status

#: The LIBBOX_ABI_VERSION this package was written for.
ABI_VERSION = 1


class BoxError(Structure):
    _fields_ = [("code", c_int32), ("message", c_char_p)]


class BoxExit(Structure):
    _fields_ = [
        ("status", c_int32),
        ("exit_code", c_int32),
        ("signal", c_int32),
        ("duration_us", c_int64),
        ("message", c_char_p),
        ("reason", c_char_p),
    ]


COMPLETE_FN = CFUNCTYPE(None, c_void_p, c_int32, c_char_p, c_uint64, c_char_p)
PROGRESS_FN = CFUNCTYPE(None, c_void_p, c_char_p, c_int64, c_int64)
OUTPUT_FN = CFUNCTYPE(None, c_void_p, c_void_p, c_size_t)


#: A NULL progress callback (box_create without progress reports).
NO_PROGRESS = PROGRESS_FN()


class BoxEvent(Structure):
    _fields_ = [
        ("tag", c_uint64),
        ("kind", c_int32),
        ("data", c_void_p),
        ("len", c_size_t),
        ("exit", BoxExit),
    ]


EVENT_STDOUT, EVENT_STDERR, EVENT_EXIT = 1, 2, 3
#: box_exec_queued flag: the poll taking the exit releases the exec handle.
EXEC_RELEASE_ON_EXIT = 4


_ERR = POINTER(POINTER(BoxError))
_H = c_uint64


def _candidates() -> list[str]:
    env = os.environ.get("LIBBOX_LIBRARY")
    if env:
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    return [
        os.path.join(here, "_lib", "libbox.so"),
        # A source checkout: bindings/python/libbox -> build/lib/libbox.so.
        os.path.normpath(os.path.join(here, "..", "..", "..", "build", "lib", "libbox.so")),
    ]


def _load() -> tuple[ctypes.CDLL, str]:
    cands = _candidates()
    path = next((p for p in cands if os.path.exists(p)), None)
    if path is None:
        if os.environ.get("LIBBOX_LIBRARY"):
            raise ImportError(
                f"libbox: LIBBOX_LIBRARY={cands[0]} does not exist: point it at a built libbox.so or unset it"
            )
        raise ImportError(
            "libbox: libbox.so not found (looked in " + ", ".join(cands) + "): "
            "reinstall the libbox wheel, run ./build.sh build in a source checkout, "
            "or set LIBBOX_LIBRARY=/path/to/libbox.so"
        )
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise ImportError(
            f"libbox: cannot load {path}: {e}: rebuild it for this machine or set LIBBOX_LIBRARY"
        ) from None
    try:
        lib.box_abi_version.restype = c_uint32
        lib.box_abi_version.argtypes = []
        abi = int(lib.box_abi_version())
    except AttributeError:
        raise ImportError(f"libbox: {path} is not libbox.so (no box_abi_version)") from None
    if abi != ABI_VERSION:
        raise ImportError(
            f"libbox: {path} has ABI version {abi} but this Python package needs {ABI_VERSION}: "
            "install the libbox wheel built with that library, or set LIBBOX_LIBRARY to a matching libbox.so"
        )
    return lib, path


lib, library_path = _load()


def _sig(name: str, restype: Any, *argtypes: Any) -> None:
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)


_sig("box_version", c_char_p)
_sig("box_live_handles", c_int64)
_sig("box_runtime_open", c_int32, c_char_p, POINTER(_H), _ERR)
_sig("box_runtime_close", c_int32, _H, _ERR)
_sig("box_create", c_int32, _H, c_char_p, PROGRESS_FN, COMPLETE_FN, c_void_p, _ERR)
_sig("box_get", c_int32, _H, c_char_p, POINTER(_H), _ERR)
_sig("box_list", c_int32, _H, POINTER(c_void_p), _ERR)
_sig("box_info", c_int32, _H, POINTER(c_void_p), _ERR)
_sig("box_start", c_int32, _H, COMPLETE_FN, c_void_p, _ERR)
_sig("box_stop", c_int32, _H, COMPLETE_FN, c_void_p, _ERR)
_sig("box_remove", c_int32, _H, c_char_p, c_int32, COMPLETE_FN, c_void_p, _ERR)
_sig("box_queue_open", c_int32, POINTER(_H), POINTER(c_int32), _ERR)
_sig("box_queue_poll", c_int32, _H, POINTER(BoxEvent), c_size_t, POINTER(c_size_t), _ERR)
_sig("box_queue_close", c_int32, _H, _ERR)
_sig("box_exec_queued", c_int32, _H, c_char_p, _H, c_uint64, c_uint32, POINTER(_H), _ERR)
_sig("box_exec_write_stdin", c_int32, _H, c_char_p, c_size_t, _ERR)
_sig("box_exec_close_stdin", c_int32, _H, _ERR)
_sig("box_exec_signal", c_int32, _H, c_int32, _ERR)
_sig("box_exec_resize", c_int32, _H, c_uint32, c_uint32, _ERR)
_sig("box_exec_cancel", c_int32, _H, _ERR)
_sig("box_pull", c_int32, _H, c_char_p, PROGRESS_FN, COMPLETE_FN, c_void_p, _ERR)
_sig("box_images", c_int32, _H, POINTER(c_void_p), _ERR)
_sig("box_doctor", c_int32, c_char_p, POINTER(c_void_p), _ERR)
_sig("box_image_remove", c_int32, _H, c_char_p, c_int32, COMPLETE_FN, c_void_p, _ERR)
_sig("box_warm", c_int32, _H, c_char_p, c_char_p, COMPLETE_FN, c_void_p, _ERR)
_sig("box_pull_async", c_int32, _H, c_char_p, PROGRESS_FN, COMPLETE_FN, c_void_p, POINTER(_H), _ERR)
_sig("box_pull_cancel", c_int32, _H, _ERR)
_sig("box_image_prune", c_int32, _H, COMPLETE_FN, c_void_p, _ERR)
_sig("box_copy_in", c_int32, _H, c_char_p, c_char_p, COMPLETE_FN, c_void_p, _ERR)
_sig("box_copy_out", c_int32, _H, c_char_p, c_char_p, COMPLETE_FN, c_void_p, _ERR)
_sig("box_snapshot", c_int32, _H, c_char_p, COMPLETE_FN, c_void_p, _ERR)
_sig("box_snapshots", c_int32, _H, POINTER(c_void_p), _ERR)
_sig("box_snapshot_remove", c_int32, _H, c_char_p, c_int32, COMPLETE_FN, c_void_p, _ERR)
_sig("box_restore", c_int32, _H, c_char_p, COMPLETE_FN, c_void_p, _ERR)
_sig("box_export", c_int32, _H, c_char_p, COMPLETE_FN, c_void_p, _ERR)
_sig("box_release", c_int32, c_uint64, _ERR)
_sig("box_string_free", None, c_void_p)
_sig("box_error_free", None, POINTER(BoxError))


def check(fn: Callable[..., int], *args: Any) -> None:
    """Calls a status-returning library function (err out-param appended)
    and raises the matching Error on failure."""
    err = POINTER(BoxError)()
    status = fn(*args, byref(err))
    if status != 0:
        raise take_error(status, err)


def take_error(status: int, err: Any) -> Error:
    msg = None
    if err:
        raw = err.contents.message
        msg = raw.decode("utf-8", "replace") if raw else None
        lib.box_error_free(err)
    return error_from_status(status, msg)


def take_string(fn: Callable[..., int], *args: Any) -> str:
    """Calls a function returning a library-owned string through char**."""
    out = c_void_p()
    check(fn, *args, byref(out))
    if not out.value:
        return ""
    try:
        return ctypes.string_at(out.value).decode("utf-8")
    finally:
        lib.box_string_free(out.value)


def release(handle: int) -> None:
    """Releases a box or exec handle, ignoring a handle already gone."""
    err = POINTER(BoxError)()
    if lib.box_release(handle, byref(err)) != 0 and err:
        lib.box_error_free(err)


class Inbox:
    """Hands work from library threads to one event loop, coalescing wake-ups:
    under load many exits and chunks cost one ``call_soon_threadsafe``.
    Items run on the loop in the order they were posted."""

    __slots__ = ("_loop", "_items", "_scheduled", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # weak: _inboxes is keyed by the loop
        self._items: collections.deque[tuple[Callable[..., None], tuple]] = collections.deque()
        self._scheduled = False  # a _drain is queued on the loop

    def post(self, fn: Callable[..., None], *args: Any) -> bool:
        """Any thread. False when the loop is gone (the item will never run)."""
        try:
            loop = self._loop()
            if loop is None or loop.is_closed():
                return False
            self._items.append((fn, args))
            if not self._scheduled:
                self._scheduled = True
                loop.call_soon_threadsafe(self._drain)
            return True
        except BaseException:  # closed meanwhile (RuntimeError) or interpreter exiting
            return False

    def _drain(self) -> None:
        self._scheduled = False
        items = self._items
        while items:
            fn, args = items.popleft()
            try:
                fn(*args)
            except Exception as e:  # a bug here must not stop the other items
                loop = self._loop()
                if loop is not None:
                    loop.call_exception_handler({"message": "libbox: callback hand-off failed", "exception": e})


_inboxes: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Inbox]" = weakref.WeakKeyDictionary()


def inbox(loop: asyncio.AbstractEventLoop) -> Inbox:
    """The loop's inbox; call on the loop's thread."""
    box = _inboxes.get(loop)
    if box is None:
        box = _inboxes[loop] = Inbox(loop)
    return box


# --- library threads ---

#: Library threads (by ident) that keep a Python thread state between
#: callbacks; added to, never removed from, under the GIL.
_kept_states: set[int] = set()
_gil_ensure = ctypes.pythonapi.PyGILState_Ensure
_gil_ensure.restype = ctypes.c_int
_gil_ensure.argtypes = []


def keep_thread_state() -> None:
    """Called first in every callback: makes this library thread keep the
    Python thread state ctypes made for it. Otherwise each callback creates
    one and deletes it on return, which maps and unmaps its frame stack:
    per exec that was a large share of this process's CPU (mmap, page
    faults, TLB flushes). The library reuses a handful of threads, each
    keeps one thread state; the runtimes close before the interpreter ends
    (runtime.py's atexit), so no callback comes after it."""
    ident = threading.get_ident()
    if ident not in _kept_states:
        _gil_ensure()  # never released: the thread state outlives this callback
        _kept_states.add(ident)


# --- completions (box_create, box_start, box_stop, box_remove, box_copy_*) ---

_keys = itertools.count(1)
_completions: dict[int, tuple[Inbox, asyncio.Future[tuple[int, str | None]]]] = {}


def _settle(fut: asyncio.Future[tuple[int, str | None]], status: int, message: str | None, handle: int,
            doc: str | None) -> None:
    if fut.done():  # the awaiting task was cancelled: nobody will own the handle
        if handle:
            release(handle)
        return
    if status != 0:
        fut.set_exception(error_from_status(status, message))
    else:
        fut.set_result((handle, doc))


def _on_complete(user_data: int | None, status: int, message: bytes | None, handle: int,
                 doc: bytes | None) -> None:
    try:
        keep_thread_state()
        entry = _completions.pop(user_data or 0, None)
        if entry is None:
            if handle:
                release(handle)
            return
        box, fut = entry
        msg = message.decode("utf-8", "replace") if message else None
        js = doc.decode("utf-8", "replace") if doc else None
        if not box.post(_settle, fut, status, msg, handle, js) and handle:
            release(handle)
    except BaseException:
        pass


on_complete = COMPLETE_FN(_on_complete)


def submit(fn: Callable[..., int], *args: Any,
           progress: Optional[Callable[[Any], None]] = None) -> asyncio.Future[tuple[int, str | None]]:
    """Starts an asynchronous library call whose last arguments are
    (done, user_data, err); returns a future of (handle, json). With
    ``progress``, the call's last argument before them is the progress
    callback, and ``progress`` is called on the loop with each event."""
    fut, _ = _submit(fn, args, progress, False)
    return fut


def submit_cancellable(fn: Callable[..., int], *args: Any, progress: Optional[Callable[[Any], None]] = None
                       ) -> tuple[asyncio.Future[tuple[int, str | None]], int]:
    """Like :func:`submit`, for calls whose last arguments are (progress,
    done, user_data, out, err): returns the future and the handle the call
    put in ``out`` (the caller releases it)."""
    return _submit(fn, (*args, on_progress if progress is not None else NO_PROGRESS), progress, True)


def _submit(fn: Callable[..., int], args: tuple, progress: Optional[Callable[[Any], None]],
            with_out: bool) -> tuple[asyncio.Future[tuple[int, str | None]], int]:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[tuple[int, str | None]] = loop.create_future()
    key = next(_keys)
    box = inbox(loop)
    _completions[key] = (box, fut)
    if progress is not None:
        _progress[key] = (box, progress)
        fut.add_done_callback(lambda _f: _progress.pop(key, None))
    out = c_uint64()
    try:
        if with_out:
            check(fn, *args, on_complete, key, byref(out))
        elif progress is not None:
            check(fn, *args, on_progress, on_complete, key)
        else:
            check(fn, *args, on_complete, key)
    except BaseException:
        _completions.pop(key, None)
        _progress.pop(key, None)
        raise
    return fut, out.value


# --- pull progress ---

class PullProgress(NamedTuple):
    """One image pull progress event: a layer digest, bytes done and the
    layer's total (-1 when unknown)."""

    layer: str
    done: int
    total: int


_progress: dict[int, tuple[Inbox, Callable[[Any], None]]] = {}


def _deliver_progress(fn: Callable[[Any], None], ev: PullProgress) -> None:
    try:
        fn(ev)
    except Exception:  # a failing progress callback must not break the pull
        pass


def _on_progress(user_data: int | None, layer: bytes | None, done: int, total: int) -> None:
    try:
        keep_thread_state()
        entry = _progress.get(user_data or 0)
        if entry is None:
            return
        box, fn = entry
        ev = PullProgress(layer.decode("utf-8", "replace") if layer else "", int(done), int(total))
        box.post(_deliver_progress, fn, ev)
    except BaseException:
        pass


on_progress = PROGRESS_FN(_on_progress)


# --- exec events ---


class ExecSink(Protocol):
    """The loop-thread side of one exec (process.Process)."""

    def _feed(self, fd: int, data: bytes) -> None: ...
    def _finish(self, ex: tuple) -> None: ...


#: Events taken per box_queue_poll.
_BATCH = 256


class EventQueue:
    """One library event queue watched by one event loop: the events of the
    execs started with :meth:`exec` reach their sinks on the loop's thread,
    many per call into the library, and no library thread ever waits for
    the GIL. Owned by a Runtime (one per loop it ran execs on), which closes
    it after the runtime itself (every exit event is queued by then)."""

    __slots__ = ("loop", "_handle", "_fd", "_sinks", "_events", "_count")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        out, fd = c_uint64(), c_int32()
        check(lib.box_queue_open, byref(out), byref(fd))
        self._handle, self._fd = out.value, fd.value
        #: Execs whose exit has not been taken yet, by tag. Loop thread only.
        self._sinks: dict[int, ExecSink] = {}
        self._events = (BoxEvent * _BATCH)()
        self._count = c_size_t()
        try:
            loop.add_reader(self._fd, self._drain)
        except BaseException:
            lib.box_queue_close(self._handle, None)
            raise

    def exec(self, box: int, request: bytes, sink: ExecSink, key: int) -> int:
        """Loop thread: box_exec_queued; returns the exec handle, which the
        poll that takes the exit releases (just before ``sink._finish``)."""
        out = c_uint64()
        self._sinks[key] = sink
        try:
            check(lib.box_exec_queued, box, request, self._handle, key, EXEC_RELEASE_ON_EXIT, byref(out))
        except BaseException:
            del self._sinks[key]
            raise
        return out.value

    def _drain(self) -> None:
        """Loop thread: delivers every waiting event."""
        events, count, sinks = self._events, self._count, self._sinks
        while self._handle:
            if lib.box_queue_poll(self._handle, events, _BATCH, byref(count), None) != 0:
                return
            n = count.value
            for i in range(n):
                ev = events[i]
                try:
                    if ev.kind == EVENT_EXIT:
                        sink = sinks.pop(ev.tag, None)
                        if sink is not None:
                            e = ev.exit
                            msg = e.message.decode("utf-8", "replace") if e.message else None
                            reason = e.reason.decode("utf-8", "replace") if e.reason else None
                            sink._finish((e.status, e.exit_code, e.signal, e.duration_us, msg, reason))
                    else:
                        sink = sinks.get(ev.tag)
                        if sink is not None and ev.len:
                            sink._feed(ev.kind, ctypes.string_at(ev.data, ev.len))
                except Exception as exc:  # a bug here must not lose the other events
                    self.loop.call_exception_handler({"message": "libbox: exec event delivery failed",
                                                      "exception": exc})
            if n < _BATCH:
                return

    def close(self) -> None:
        """Delivers what waits and closes the queue: on the loop's thread
        directly, else through the loop while it runs. Idempotent."""
        loop = self.loop
        try:
            running: Optional[asyncio.AbstractEventLoop] = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop and loop.is_running():
            try:
                loop.call_soon_threadsafe(self._close)
                return
            except RuntimeError:  # closed meanwhile
                pass
        self._close()

    def _close(self) -> None:
        if not self._handle:
            return
        if not self.loop.is_closed():
            self._drain()
            try:
                self.loop.remove_reader(self._fd)
            except Exception:
                pass
        h, self._handle = self._handle, 0
        lib.box_queue_close(h, None)


def new_key() -> int:
    return next(_keys)
