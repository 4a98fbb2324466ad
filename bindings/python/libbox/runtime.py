"""Runtimes: a home directory of boxes, opened in the library.

A :class:`Runtime` owns one ``box_runtime_t``. Closing it cancels its running
commands, stops boxes that are not detached and releases every handle that
came from it. Open runtimes are closed at interpreter exit, so no library
callback can reach a finalizing interpreter. This module must never close a
runtime from a library callback (the library would wait for that callback).
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import asyncio
import ctypes
import json
import threading
from types import TracebackType
from typing import Any, Callable, Iterable, Mapping, Optional, Union

from . import _check, _ffi, box as _box
from .box import Box, Volume
from .errors import FailedPreconditionError

__all__ = ["Runtime", "Image", "ImageConfig", "default_runtime"]


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """The defaults an image gives its boxes."""

    env: "list[str]"
    working_dir: str
    user: str
    entrypoint: "list[str]"
    cmd: "list[str]"


@dataclasses.dataclass(frozen=True)
class Image:
    """An image in the runtime's store."""

    ref: str
    id: str
    root: str
    size: int
    created: str
    config: ImageConfig

    @classmethod
    def _from(cls, doc: "dict[str, Any]") -> "Image":
        c = doc.get("config") or {}
        return cls(
            ref=str(doc.get("ref", "")), id=str(doc.get("id", "")), root=str(doc.get("root", "")),
            size=int(doc.get("size", 0)), created=str(doc.get("created", "")),
            config=ImageConfig(env=list(c.get("env") or []), working_dir=str(c.get("working_dir") or ""),
                               user=str(c.get("user") or ""), entrypoint=list(c.get("entrypoint") or []),
                               cmd=list(c.get("cmd") or [])),
        )


ProgressCallback = Callable[["_ffi.PullProgress"], None]


def _check_progress(progress: "Optional[ProgressCallback]") -> "Optional[ProgressCallback]":
    return _check.progress(progress)


_lock = threading.Lock()
_open: "set[Runtime]" = set()  # guarded by _lock
_default: "Optional[Runtime]" = None  # guarded by _lock


# Runtime options the library would otherwise take from LIBBOX_* variables.
# They are read here, when a Runtime opens, not by the library: it sees the
# environment as it was when it was loaded, not later changes to os.environ.
_ENV_OPTIONS = (
    ("boot_timeout", "LIBBOX_BOOT_TIMEOUT"),
    ("accel", "LIBBOX_ACCEL"),
    ("kernel", "LIBBOX_KERNEL"),
    ("kernel_modules", "LIBBOX_KERNEL_MODULES"),
    ("agent", "LIBBOX_AGENT"),
    ("vm_debug", "LIBBOX_VM_DEBUG"),
    ("registry_auth", "LIBBOX_REGISTRY_AUTH"),
    ("insecure_registries", "LIBBOX_INSECURE_REGISTRIES"),
    ("registry_mirrors", "LIBBOX_REGISTRY_MIRRORS"),
)


class Runtime:
    """A libbox runtime on ``home`` (default ``os.environ["LIBBOX_HOME"]``,
    else ``~/.local/share/libbox``). Use it as a (async) context manager or call
    :meth:`close`.

    The keyword options are those of the runtime options JSON in libbox.h;
    each one left None takes its ``LIBBOX_*`` variable (see the README):
    ``boot_timeout`` (seconds, or a string such as ``"2m"``), ``accel``
    (``"kvm"``/``"tcg"``), ``kernel``, ``kernel_modules``, ``agent``,
    ``vm_debug`` (bool), and ``registry_auth``, ``insecure_registries``,
    ``registry_mirrors`` written as their variables are."""

    def __init__(
        self,
        home: "Union[str, os.PathLike[str], None]" = None,
        *,
        boot_timeout: "Union[float, str, None]" = None,
        accel: Optional[str] = None,
        kernel: "Union[str, os.PathLike[str], None]" = None,
        kernel_modules: "Union[str, os.PathLike[str], None]" = None,
        agent: "Union[str, os.PathLike[str], None]" = None,
        vm_debug: Optional[bool] = None,
        registry_auth: Optional[str] = None,
        insecure_registries: Optional[str] = None,
        registry_mirrors: Optional[str] = None,
    ) -> None:
        opts: dict[str, Any] = {}
        if home is None:
            home = os.environ.get("LIBBOX_HOME") or None
        if home is not None:
            opts["home"] = _check.path(home, "home")
        given = {
            "boot_timeout": boot_timeout, "accel": accel, "kernel": kernel, "kernel_modules": kernel_modules,
            "agent": agent, "vm_debug": vm_debug, "registry_auth": registry_auth,
            "insecure_registries": insecure_registries, "registry_mirrors": registry_mirrors,
        }  # fmt: skip
        for key, var in _ENV_OPTIONS:
            v = given[key]
            if v is None:
                env = os.environ.get(var)
                if env:
                    opts[key] = env == "1" if key == "vm_debug" else env
            elif key == "vm_debug":
                opts[key] = _check.flag(v, key)
            elif key == "boot_timeout" and not isinstance(v, str):
                opts[key] = _check.timeout(v)
            elif key in ("kernel", "kernel_modules", "agent"):
                opts[key] = _check.path(v, key)
            else:
                opts[key] = _check.text(v, key)
        self.home = opts.get("home")
        out = ctypes.c_uint64()
        _ffi.check(_ffi.lib.box_runtime_open, json.dumps(opts).encode(), ctypes.byref(out))
        self._handle = out.value
        self._threads_lock = threading.Lock()
        # Threads running a blocking library call (stdin writes). Guarded by _threads_lock.
        self._threads: "set[threading.Thread]" = set()
        # The event queue of each loop that ran execs (closed after the runtime).
        self._queues: "dict[asyncio.AbstractEventLoop, _ffi.EventQueue]" = {}
        with _lock:
            _open.add(self)

    def _require(self) -> int:
        if not self._handle:
            raise FailedPreconditionError("the runtime is closed: open a new libbox.Runtime")
        return self._handle

    @property
    def closed(self) -> bool:
        return not self._handle

    def _queue(self, loop: asyncio.AbstractEventLoop) -> "_ffi.EventQueue":
        """The event queue of ``loop`` (its thread only), opened on first use."""
        q = self._queues.get(loop)
        if q is None:
            q = self._queues[loop] = _ffi.EventQueue(loop)
        return q

    def _blocking(self, fn: Callable[..., Any], *args: Any) -> "asyncio.Future[Any]":
        """Runs a library call that may block on its own daemon thread and
        returns a future of its result. Daemon threads, so that a write the
        box never reads cannot keep the interpreter from exiting (closing the
        runtime, also at exit, ends the call); close() joins them."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        inbox = _ffi.inbox(loop)

        def settle(exc: Optional[BaseException], res: Any) -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(res)

        def run() -> None:
            exc: Optional[BaseException] = None
            res = None
            try:
                try:
                    res = fn(*args)
                except BaseException as e:  # handed to the awaiting task
                    exc = e
                inbox.post(settle, exc, res)
            finally:
                with self._threads_lock:
                    self._threads.discard(threading.current_thread())

        with self._threads_lock:
            self._require()
            t = threading.Thread(target=run, name="libbox-blocking-call", daemon=True)
            self._threads.add(t)
        t.start()
        return fut

    async def create(
        self,
        image: Optional[str] = None,
        name: Optional[str] = None,
        isolation: Optional[str] = None,
        cpus: Optional[int] = None,
        memory_mib: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        volumes: "Optional[Iterable[Volume]]" = None,
        network: bool = False,
        auto_remove: bool = False,
        detach: bool = False,
        progress: "Optional[ProgressCallback]" = None,
        platform: Optional[str] = None,
        allow_net: "Optional[Iterable[str]]" = None,
        deny_net: "Optional[Iterable[str]]" = None,
        ports: "Optional[Iterable[Any]]" = None,
        hosts: "Optional[Mapping[str, str]]" = None,
        dns: "Optional[Iterable[str]]" = None,
        from_: Optional[str] = None,
    ) -> "Box":
        """Creates a box (pulling its image if needed) without starting it.
        Start it with ``await box.start()`` or ``async with box``. Unlike
        ``Box(...)``, ``auto_remove`` defaults to False: a created box is kept
        until :meth:`remove`. ``from_`` clones a snapshot or box (see
        :class:`Box`); image and isolation default to busybox and vm
        otherwise."""
        box = Box(image=image, name=name, isolation=isolation, cpus=cpus, memory_mib=memory_mib, env=env, cwd=cwd,
                  volumes=volumes, network=network, auto_remove=auto_remove, detach=detach,
                  runtime=self, progress=_check_progress(progress), allow_net=allow_net, deny_net=deny_net,
                  ports=ports, hosts=hosts, dns=dns, platform=platform, from_=from_)
        await box._create()
        return box

    async def get(self, id_or_name: str) -> "Box":
        """The box with this id or name (NotFoundError if none)."""
        key = _check.text(id_or_name, "id_or_name")
        out = ctypes.c_uint64()
        _ffi.check(_ffi.lib.box_get, self._require(), key.encode(), ctypes.byref(out))
        return Box._adopt(runtime=self, handle=out.value)

    async def list(self) -> "list[dict[str, Any]]":
        """Info documents of every box in this runtime's home."""
        doc = _ffi.take_string(_ffi.lib.box_list, self._require())
        return list(json.loads(doc or "[]") or [])

    async def pull(self, ref: str, progress: "Optional[ProgressCallback]" = None, *,
                   platform: Optional[str] = None) -> Image:
        """Pulls (or refreshes) an image: ``alpine:3.20``, ``oci-layout:/dir``,
        ``docker-archive:/file.tar`` or the builtin ``busybox``. ``progress``,
        a plain (not async) callable, gets a :class:`PullProgress` per event,
        on the event loop thread. ``platform`` ("linux/arm64") picks from a
        multi-arch image (default: the host's). Cancelling the awaiting task
        stops the download (what was fetched is kept; the next pull resumes)."""
        req: dict[str, Any] = {"ref": _check.text(ref, "ref")}
        if platform is not None:
            req["platform"] = _check.text(platform, "platform")
        cb = _check_progress(progress)
        fut, handle = _ffi.submit_cancellable(_ffi.lib.box_pull_async, self._require(), json.dumps(req).encode(),
                                              progress=cb)
        try:
            try:
                _, doc = await asyncio.shield(fut)
            except asyncio.CancelledError:
                _ffi.check(_ffi.lib.box_pull_cancel, handle)
                try:
                    await fut  # the library confirms the end (promptly)
                except Exception:
                    pass
                raise
        finally:
            _ffi.release(handle)
        return Image._from(json.loads(doc or "{}"))

    async def prune_images(self) -> "dict[str, int]":
        """Deletes the images no name refers to any more (a moved tag, a
        forced removal) once no box uses them, the cached layers no image
        needs and what interrupted pulls left. Returns what was reclaimed:
        ``{"roots": N, "blobs": N, "bytes": N}``."""
        _, doc = await _ffi.submit(_ffi.lib.box_image_prune, self._require())
        return {k: int(v) for k, v in (json.loads(doc or "{}") or {}).items()}

    async def images(self) -> "list[Image]":
        """The images in this runtime's store."""
        doc = _ffi.take_string(_ffi.lib.box_images, self._require())
        return [Image._from(d) for d in json.loads(doc or "[]") or []]

    async def remove_image(self, ref: str, force: bool = False) -> None:
        """Removes an image; refused (FailedPreconditionError) while a box uses
        it, unless ``force``."""
        r = _check.text(ref, "ref")
        f = _check.flag(force, "force")
        await _ffi.submit(_ffi.lib.box_image_remove, self._require(), r.encode(), 1 if f else 0)

    async def warm(self, image: str = "busybox", *, cpus: Optional[int] = None,
                   memory_mib: Optional[int] = None, platform: Optional[str] = None) -> None:
        """Builds the VM template of ``image`` for vm boxes with these
        ``cpus`` and ``memory_mib``: they then start by restoring a booted
        machine instead of booting (``LIBBOX_VM_TEMPLATES=0`` turns that
        off). Returns once the template exists; it boots one VM to build it."""
        ref = _check.text(image, "image")
        opts: dict[str, Any] = {}
        for key, v in (("cpus", _check.positive_int(cpus, "cpus")),
                       ("memory_mib", _check.positive_int(memory_mib, "memory_mib"))):
            if v is not None:
                opts[key] = v
        if platform is not None:
            opts["platform"] = _check.text(platform, "platform")
        await _ffi.submit(_ffi.lib.box_warm, self._require(), ref.encode(), json.dumps(opts).encode())

    async def remove(self, id_or_name: str, force: bool = False) -> None:
        """Removes a box and its files. A running box is refused
        (FailedPreconditionError) unless ``force`` stops it first."""
        key = _check.text(id_or_name, "id_or_name")
        f = _check.flag(force, "force")
        await _ffi.submit(_ffi.lib.box_remove, self._require(), key.encode(), 1 if f else 0)

    async def snapshots(self) -> "list[dict[str, Any]]":
        """The snapshots of this runtime's home, oldest first: ``name``, ``id``,
        ``box``, ``isolation``, ``image``, ``parent``, ``size`` (bytes its own
        layer takes), ``used_by`` (boxes and snapshots sitting on it)."""
        doc = _ffi.take_string(_ffi.lib.box_snapshots, self._require())
        return list(json.loads(doc or "[]") or [])

    async def remove_snapshot(self, name: str, force: bool = False) -> None:
        """Removes a snapshot; refused (FailedPreconditionError) while a box or
        snapshot sits on it, unless ``force`` (the name goes at once, the layer
        when its last user does)."""
        n = _check.text(name, "name")
        f = _check.flag(force, "force")
        await _ffi.submit(_ffi.lib.box_snapshot_remove, self._require(), n.encode(), 1 if f else 0)

    def close(self) -> None:
        """Closes the runtime (blocks until its commands are cancelled and its
        boxes stopped, seconds at most). Idempotent."""
        global _default
        with _lock:
            handle, self._handle = self._handle, 0
            _open.discard(self)
            if _default is self:
                _default = None
        if not handle:
            return
        try:
            _ffi.check(_ffi.lib.box_runtime_close, handle)
        finally:
            # Every exit is queued now: deliver and close each loop's queue.
            queues, self._queues = list(self._queues.values()), {}
            for q in queues:
                q.close()
            with self._threads_lock:
                threads = list(self._threads)
            for t in threads:
                t.join(10)

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, et: Optional[type], ev: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.close()

    async def __aenter__(self) -> "Runtime":
        return self

    async def __aexit__(self, et: Optional[type], ev: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<libbox.Runtime home={self.home!r} {state}>"


def default_runtime() -> Runtime:
    """The runtime ``Box(...)`` uses when none is given: opened on first use
    on ``$LIBBOX_HOME`` (or the default home), closed at exit or by
    ``default_runtime().close()`` (the next use opens a new one)."""
    global _default
    with _lock:
        rt = _default
    if rt is not None and not rt.closed:
        return rt
    new = Runtime()
    with _lock:
        if _default is None or _default.closed:
            _default = new
            return new
        rt = _default
    new.close()
    return rt


_box.set_default_runtime(default_runtime)


@atexit.register
def _close_all() -> None:
    with _lock:
        rts = list(_open)
    for rt in rts:
        try:
            rt.close()
        except BaseException:
            pass
