"""The file-system API of a box (``box.fs``), box stats and processes.

Every call goes through the library's asynchronous calls: nothing here
blocks the event loop. Paths are absolute box paths; symlinks resolve
inside the box root as in a chroot; ``..`` is refused (InvalidArgumentError).
A missing path raises NotFoundError; a directory where a file is wanted (or
the reverse) FailedPreconditionError.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import json
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterable, Optional, Union

from . import _check, _ffi

__all__ = ["FileSystem", "FileInfo", "WatchEvent", "Watcher"]

_H = ctypes.c_uint64
_ERR = ctypes.POINTER(ctypes.POINTER(_ffi.BoxError))
_ffi._sig("box_fs_read", ctypes.c_int32, _H, ctypes.c_char_p, _ffi.OUTPUT_FN, _ffi.COMPLETE_FN, ctypes.c_void_p, _ERR)
_ffi._sig("box_fs_write", ctypes.c_int32, _H, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, _ffi.COMPLETE_FN,
          ctypes.c_void_p, _ERR)
for _name in ("box_fs_write_many", "box_fs_list", "box_fs_stat", "box_fs_exists", "box_fs_mkdir", "box_fs_remove",
              "box_fs_rename", "box_process_kill", "box_publish", "box_unpublish"):
    _ffi._sig(_name, ctypes.c_int32, _H, ctypes.c_char_p, _ffi.COMPLETE_FN, ctypes.c_void_p, _ERR)
for _name in ("box_stats", "box_processes"):
    _ffi._sig(_name, ctypes.c_int32, _H, _ffi.COMPLETE_FN, ctypes.c_void_p, _ERR)
_ffi._sig("box_fs_watch", ctypes.c_int32, _H, ctypes.c_char_p, _ffi.OUTPUT_FN, _ffi.COMPLETE_FN, ctypes.c_void_p,
          ctypes.POINTER(_H), _ERR)
_ffi._sig("box_fs_watch_close", ctypes.c_int32, _H, _ERR)

Data = Union[bytes, bytearray, memoryview, str]


@dataclass(frozen=True)
class FileInfo:
    """One path of a box (a symlink itself, not its target)."""

    name: str
    path: str
    type: str  # "file", "dir", "symlink" or "other"
    size: int
    mode: int  # permission bits as chmod takes them (0o644)
    uid: int
    gid: int
    mtime: str  # RFC 3339
    link_target: str = ""

    @classmethod
    def _of(cls, d: dict[str, Any]) -> "FileInfo":
        return cls(d["name"], d["path"], d["type"], d["size"], d["mode"], d["uid"], d["gid"], d["mtime"],
                   d.get("link_target", ""))


@dataclass(frozen=True)
class WatchEvent:
    """A change below a watched directory. ``type`` is "create", "write",
    "remove", "rename", "chmod", or "overflow" (events were lost: rescan)."""

    type: str
    path: str
    is_dir: bool = False


# Reads in flight: chunks collected on the library's thread, by key.
_reads: dict[int, list[bytes]] = {}


def _on_read(user_data: Optional[int], data: Optional[int], n: int) -> None:
    try:
        _ffi.keep_thread_state()
        chunks = _reads.get(user_data or 0)
        if chunks is not None and n:
            chunks.append(ctypes.string_at(data or 0, n))
    except BaseException:
        pass


_read_cb = _ffi.OUTPUT_FN(_on_read)

# Watches whose done has not come: (inbox, queue) by key.
_watches: dict[int, tuple[Any, "asyncio.Queue[Any]"]] = {}


def _on_watch_event(user_data: Optional[int], data: Optional[int], n: int) -> None:
    try:
        _ffi.keep_thread_state()
        entry = _watches.get(user_data or 0)
        if entry is None:
            return
        inbox, queue = entry
        d = json.loads(ctypes.string_at(data or 0, n))
        inbox.post(queue.put_nowait, WatchEvent(d["type"], d.get("path", ""), bool(d.get("is_dir", False))))
    except BaseException:
        pass


_watch_cb = _ffi.OUTPUT_FN(_on_watch_event)


def _submit(key: int, fn: Any, *args: Any) -> "asyncio.Future[tuple[int, Optional[str]]]":
    """Like _ffi.submit, with the user_data key chosen by the caller (a
    data callback of the same call shares it)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[tuple[int, Optional[str]]] = loop.create_future()
    _ffi._completions[key] = (_ffi.inbox(loop), fut)
    try:
        _ffi.check(fn, *args, _ffi.on_complete, key)
    except BaseException:
        _ffi._completions.pop(key, None)
        raise
    return fut


async def _call(box: Any, fn: Any, req: Optional[dict[str, Any]]) -> Any:
    """Runs a call answering with JSON; req None: a call without a request."""
    args = () if req is None else (json.dumps(req).encode(),)
    _, doc = await _ffi.submit(fn, box._require(), *args)
    return json.loads(doc) if doc else None


async def stats(box: Any) -> dict[str, Any]:
    return await _call(box, _ffi.lib.box_stats, None)


async def processes(box: Any) -> list[dict[str, Any]]:
    return await _call(box, _ffi.lib.box_processes, None)


async def kill(box: Any, pid: int, signal: int) -> None:
    await _call(box, _ffi.lib.box_process_kill, {"pid": _count(pid, "pid"), "signal": _count(signal, "signal")})


def _path(p: Any, what: str = "path") -> str:
    return _check.text(p, what)


def _data(d: Any) -> bytes:
    if isinstance(d, str):
        return d.encode("utf-8")
    return bytes(_check.data(d, "data"))


def _count(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{what} must be int, not {type(v).__name__}")
    if v < 0:
        raise ValueError(f"{what} must not be negative, got {v}")
    return v


def _mode(mode: Any) -> int:
    if _count(mode, "mode") > 0o7777:
        raise ValueError(f"mode must be permission bits (0 to 0o7777), got {mode:#o}")
    return mode


class FileSystem:
    """``box.fs``: files of a running box, without host files or commands."""

    def __init__(self, box: Any) -> None:
        self._box = box

    async def _call(self, fn: Any, req: dict[str, Any]) -> Any:
        return await _call(self._box, fn, req)

    async def read(self, path: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        """The bytes of a file: all of it, or ``length`` bytes from ``offset``."""
        req: dict[str, Any] = {"path": _path(path), "offset": _count(offset, "offset")}
        if length is not None:
            req["length"] = _count(length, "length")
        key = _ffi.new_key()
        _reads[key] = []
        try:
            await _submit(key, _ffi.lib.box_fs_read, self._box._require(), json.dumps(req).encode(), _read_cb)
            return b"".join(_reads.get(key, []))
        finally:
            _reads.pop(key, None)

    async def read_text(self, path: str, encoding: str = "utf-8", errors: str = "strict") -> str:
        """The content of a file, decoded."""
        return (await self.read(path)).decode(encoding, errors)

    def _write_req(self, path: str, mode: int, make_parents: bool, user: Any) -> dict[str, Any]:
        req: dict[str, Any] = {"path": _path(path), "mode": _mode(mode),
                               "make_parents": _check.flag(make_parents, "make_parents")}
        u = _check.user(user)
        if u is not None:
            req["user"] = u
        return req

    async def write(self, path: str, data: Data, mode: int = 0o644, make_parents: bool = True,
                    user: Union[str, int, None] = None) -> int:
        """Replaces (or creates) a file atomically: a reader sees the old
        content or the new, never part. ``str`` is written as UTF-8. Files
        belong to the box's default user unless ``user`` is given."""
        b = _data(data)
        req = self._write_req(path, mode, make_parents, user)
        await _ffi.submit(_ffi.lib.box_fs_write, self._box._require(), json.dumps(req).encode(), b, len(b))
        return len(b)

    async def append(self, path: str, data: Data, mode: int = 0o644, make_parents: bool = True,
                     user: Union[str, int, None] = None) -> int:
        """Appends to a file (created when missing)."""
        b = _data(data)
        req = self._write_req(path, mode, make_parents, user)
        req["append"] = True
        await _ffi.submit(_ffi.lib.box_fs_write, self._box._require(), json.dumps(req).encode(), b, len(b))
        return len(b)

    async def write_many(self, files: Iterable[tuple[str, Data]], mode: int = 0o644, make_parents: bool = True,
                         user: Union[str, int, None] = None) -> int:
        """Writes several ``(path, data)`` files in one call, each atomically."""
        req = self._write_req("/", mode, make_parents, user)
        del req["path"]
        req["files"] = [{"path": _path(p), "data": base64.b64encode(_data(d)).decode()} for p, d in files]
        return int((await self._call(_ffi.lib.box_fs_write_many, req))["files"])

    async def list(self, path: str, depth: int = 1) -> list[FileInfo]:
        """The entries of a directory, down to ``depth`` levels, sorted by path.
        Symlinks are listed, not followed."""
        d = _check.positive_int(depth, "depth")
        return [FileInfo._of(e) for e in await self._call(_ffi.lib.box_fs_list, {"path": _path(path), "depth": d})]

    async def stat(self, path: str) -> FileInfo:
        """Describes a path (a final symlink itself)."""
        return FileInfo._of(await self._call(_ffi.lib.box_fs_stat, {"path": _path(path)}))

    async def exists(self, path: str) -> bool:
        return bool((await self._call(_ffi.lib.box_fs_exists, {"path": _path(path)}))["exists"])

    async def mkdir(self, path: str, parents: bool = True) -> None:
        """Creates a directory; with ``parents`` (the default) like ``mkdir -p``."""
        await self._call(_ffi.lib.box_fs_mkdir, {"path": _path(path), "parents": _check.flag(parents, "parents")})

    async def remove(self, path: str, recursive: bool = False) -> None:
        """Removes a file, symlink or directory (non-empty ones need ``recursive``)."""
        await self._call(_ffi.lib.box_fs_remove,
                         {"path": _path(path), "recursive": _check.flag(recursive, "recursive")})

    async def rename(self, src: str, dst: str) -> None:
        """Moves ``src`` to ``dst`` (replacing it, as rename(2) does)."""
        await self._call(_ffi.lib.box_fs_rename, {"src": _path(src, "src"), "dst": _path(dst, "dst")})

    async def watch(self, path: str, recursive: bool = False) -> "Watcher":
        """Starts watching a directory; returns once the watch is in place.
        The :class:`Watcher` is an async iterator of :class:`WatchEvent` and
        an async context manager that closes it."""
        req = {"path": _path(path), "recursive": _check.flag(recursive, "recursive")}
        loop = asyncio.get_running_loop()
        key = _ffi.new_key()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        done: asyncio.Future[tuple[int, Optional[str]]] = loop.create_future()
        _watches[key] = (_ffi.inbox(loop), queue)
        _ffi._completions[key] = (_ffi.inbox(loop), done)
        out = _H()
        try:
            _ffi.check(_ffi.lib.box_fs_watch, self._box._require(), json.dumps(req).encode(), _watch_cb,
                       _ffi.on_complete, key, ctypes.byref(out))
        except BaseException:
            _watches.pop(key, None)
            _ffi._completions.pop(key, None)
            raise
        w = Watcher(key, out.value, queue, done)
        try:
            first = await queue.get()  # "ready", or None when the watch failed
            if first is None:
                w._finish()
                done.result()  # raises the error
                raise StopAsyncIteration
        except BaseException:
            await w.close()
            raise
        return w


class Watcher:
    """An active watch: ``async for event in watcher``; ends after
    :meth:`close`, or raises UnavailableError when the box stops."""

    def __init__(self, key: int, handle: int, queue: "asyncio.Queue[Any]",
                 done: "asyncio.Future[tuple[int, Optional[str]]]") -> None:
        self._key, self._handle, self._queue, self._done = key, handle, queue, done
        self._closed = False
        done.add_done_callback(lambda _f: queue.put_nowait(None))

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self

    async def __anext__(self) -> WatchEvent:
        ev = await self._queue.get()
        if ev is None:
            self._finish()
            exc = self._done.exception()
            if exc is not None and not self._closed:
                raise exc
            raise StopAsyncIteration
        return ev

    def _finish(self) -> None:
        _watches.pop(self._key, None)
        if self._handle:
            _ffi.release(self._handle)
            self._handle = 0

    async def close(self) -> None:
        """Ends the watch and waits for its end. Idempotent."""
        self._closed = True
        if self._handle:
            err = ctypes.POINTER(_ffi.BoxError)()
            if _ffi.lib.box_fs_watch_close(self._handle, ctypes.byref(err)) != 0 and err:
                _ffi.lib.box_error_free(err)
        try:
            await asyncio.shield(self._done)
        except BaseException:
            pass
        self._finish()

    async def __aenter__(self) -> "Watcher":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
