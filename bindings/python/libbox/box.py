"""Boxes: create, start, run commands, copy files, stop, remove.

A :class:`Box` is a handle on one box of a :class:`~libbox.Runtime`. It is
an async context manager: entering creates and starts the box, leaving
removes it (``auto_remove``), stops it, or leaves it running (``detach``).
It must never block the event loop on a call that waits for the box (those
go through the library's asynchronous calls) and never reach the library
with an argument it did not check first.
"""

from __future__ import annotations

import asyncio
import json
import os
from types import TracebackType
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol, Union, runtime_checkable

from . import _check, _ffi, fs as _fs
from .errors import FailedPreconditionError, NotFoundError
from .process import ExecResult, Process

__all__ = ["Box"]

Volume = Union[tuple, Mapping[str, Any]]
StdinArg = Union[None, bool, bytes, bytearray, memoryview, str]


@runtime_checkable
class Owner(Protocol):
    """What a Box needs of the runtime it belongs to; :class:`libbox.Runtime`
    is the implementation. Imports go runtime -> box -> process, never back:
    this module names the runtime only through this protocol."""

    def _require(self) -> int: ...

    def _blocking(self, fn: Callable[..., Any], *args: Any) -> "asyncio.Future[Any]": ...

    async def remove(self, id_or_name: str, force: bool = False) -> None: ...


#: Returns the runtime of a Box given none. runtime.py installs its
#: default_runtime here when it is imported (the package always imports it).
_default_runtime: Optional[Callable[[], Owner]] = None


def set_default_runtime(factory: Callable[[], Owner]) -> None:
    """Installs the factory of the runtime ``Box(...)`` uses when given none."""
    global _default_runtime
    _default_runtime = factory


class Box:
    """One box: an isolated Linux environment running an image.

    ``Box(...)`` only records options; ``async with`` (or :meth:`start`)
    creates and starts it in ``runtime`` (default: :func:`default_runtime`).
    ``isolation`` is ``"vm"`` (a micro-VM, the default) or ``"sandbox"``
    (Linux namespaces). ``volumes`` is a list of ``(host, box[, read_only])``
    tuples or ``{"host", "box", "read_only"}`` dicts. ``progress``, a plain
    (not async) callable, gets a :class:`PullProgress` per image pull event
    while the box is created, on the event loop thread.

    ``from_`` clones a snapshot (by name) or a box (id or name): the new
    box's files start as the source's, share its read-only layers (nothing
    is copied) and are independent of it; image and isolation then come from
    the source (leave them unset). See also :meth:`clone`.
    """

    def __init__(
        self,
        image: Optional[str] = None,
        name: Optional[str] = None,
        isolation: Optional[str] = None,
        cpus: Optional[int] = None,
        memory_mib: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        volumes: Optional[Iterable[Volume]] = None,
        network: bool = False,
        auto_remove: bool = True,
        detach: bool = False,
        *,
        runtime: Optional[Owner] = None,
        progress: Optional[Callable[[Any], None]] = None,
        platform: Optional[str] = None,
        allow_net: Optional[Iterable[str]] = None,
        deny_net: Optional[Iterable[str]] = None,
        ports: Optional[Iterable[Any]] = None,
        hosts: Optional[Mapping[str, str]] = None,
        dns: Optional[Iterable[str]] = None,
        from_: Optional[str] = None,
    ) -> None:
        opts = _source_options(image, isolation, from_)
        if platform is not None:
            opts["platform"] = _check.text(platform, "platform")
        if name is not None:
            opts["name"] = _check.text(name, "name")
        if _check.positive_int(cpus, "cpus") is not None:
            opts["cpus"] = cpus
        if _check.positive_int(memory_mib, "memory_mib") is not None:
            opts["memory_mib"] = memory_mib
        e = _check.env(env)
        if e is not None:
            opts["env"] = e
        if cwd is not None:
            opts["cwd"] = _check.text(cwd, "cwd")
        vols = _check.volumes(volumes)
        if vols is not None:
            opts["volumes"] = vols
        opts["network"] = _check.network(network, allow_net, deny_net, ports, hosts, dns)
        opts["auto_remove"] = _check.flag(auto_remove, "auto_remove")
        opts["detach"] = _check.flag(detach, "detach")
        if runtime is not None:
            if not isinstance(runtime, Owner):
                raise TypeError(f"runtime must be a libbox.Runtime, not {type(runtime).__name__}")
        self._runtime = runtime
        self._options = opts
        self._progress = _check.progress(progress)
        self._auto_remove = auto_remove
        self._detach = detach
        self._handle = 0
        self._released = False
        self._id: Optional[str] = None
        self._name: Optional[str] = name

    @classmethod
    def _adopt(cls, *, runtime: Owner, handle: int) -> "Box":
        box = cls.__new__(cls)
        box._runtime = runtime
        box._options = {}
        box._progress = None
        box._handle = handle
        box._released = False
        box._id = None
        box._name = None
        box._auto_remove = False
        box._detach = False
        try:
            info = box._info()
        except BaseException:
            _ffi.release(handle)
            raise
        box._auto_remove = bool(info.get("auto_remove", False))
        box._detach = bool(info.get("detach", False))
        return box

    # --- state ---

    def _rt(self) -> Owner:
        if self._runtime is None:
            if _default_runtime is None:
                raise FailedPreconditionError("no default runtime: import libbox (not libbox.box alone)")
            self._runtime = _default_runtime()
        return self._runtime

    def _require(self) -> int:
        if self._released:
            raise FailedPreconditionError(
                "this Box was closed (its handle released): get the box again with Runtime.get(id_or_name)")
        if not self._handle:
            raise FailedPreconditionError("the box is not created yet: use `async with Box(...)` or await box.start()")
        return self._handle

    @property
    def id(self) -> Optional[str]:
        """The box id (None until created)."""
        return self._id

    @property
    def name(self) -> Optional[str]:
        """The box name (None until created unless given)."""
        return self._name

    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = json.loads(_ffi.take_string(_ffi.lib.box_info, self._require()))
        self._id = info.get("id", self._id)
        self._name = info.get("name", self._name) or self._name
        return info

    async def info(self) -> dict[str, Any]:
        """The box's info document (id, name, image, isolation, state, ...)."""
        return self._info()

    # --- lifecycle ---

    async def _create(self) -> None:
        if self._handle or self._released:
            return
        progress = self._progress
        rt = self._rt()
        req = json.dumps(self._options).encode()
        if progress is not None:
            handle, _ = await _ffi.submit(_ffi.lib.box_create, rt._require(), req, progress=progress)
        else:
            handle, _ = await _ffi.submit(_ffi.lib.box_create, rt._require(), req, _ffi.NO_PROGRESS)
        self._handle = handle
        self._info()

    async def start(self) -> "Box":
        """Creates the box if needed and starts it; returns once it serves
        commands. Starting a running box succeeds."""
        await self._create()
        await _ffi.submit(_ffi.lib.box_start, self._require())
        return self

    async def stop(self) -> None:
        """Stops the box (SIGTERM, then SIGKILL); it keeps its files."""
        await _ffi.submit(_ffi.lib.box_stop, self._require())

    async def remove(self, force: bool = False) -> None:
        """Removes the box and its files (force: stop it first), then closes this handle."""
        self._require()
        await self._rt().remove(self._id or "", force=_check.flag(force, "force"))
        self.close()

    def close(self) -> None:
        """Releases this handle (the box itself is not stopped). Idempotent."""
        if self._handle and not self._released:
            self._released = True
            _ffi.release(self._handle)

    async def __aenter__(self) -> "Box":
        try:
            await self.start()
        except BaseException:
            await self._cleanup()
            raise
        return self

    async def __aexit__(self, et: Optional[type[BaseException]], ev: Optional[BaseException],
                        tb: Optional[TracebackType]) -> None:
        await self._cleanup()

    async def _cleanup(self) -> None:
        try:
            if self._handle and not self._released and not self._detach:
                if self._auto_remove:
                    try:
                        await self._rt().remove(self._id or "", force=True)
                    except NotFoundError:
                        pass
                else:
                    await self.stop()
        finally:
            self.close()

    # --- commands ---

    def _spawn(self, cmd: Any, args: tuple, env: Any, cwd: Any, user: Any, stdin: bool,
               timeout: Any, tty: Any, collect: bool) -> Process:
        # cmd None: the image's command (Entrypoint + args, or + Cmd).
        argv = [] if cmd is None else [_check.text(cmd, "cmd")]
        for i, a in enumerate(args):
            argv.append(_check.text(a, f"argument {i + 1}", empty=True))
        req: dict[str, Any] = {"args": argv}
        if cmd is None:
            req["image_cmd"] = True
        e = _check.env(env)
        if e is not None:
            req["env"] = e
        if cwd is not None:
            req["cwd"] = _check.text(cwd, "cwd")
        u = _check.user(user)
        if u is not None:
            req["user"] = u
        if _check.flag(tty, "tty"):
            req["tty"] = True
        t = _check.timeout(timeout)
        if t is not None:
            req["timeout_ms"] = max(1, int(t * 1000 + 0.999))
        if stdin:
            req["stdin"] = True
        handle = self._require()
        loop = asyncio.get_running_loop()
        rt = self._rt()
        proc = Process(loop=loop, collect=collect, timeout=t, blocking=rt._blocking)
        proc._handle = rt._queue(loop).exec(handle, json.dumps(req).encode(), proc, proc._key)
        return proc

    async def exec(self, cmd: str, *args: str, env: Optional[Mapping[str, str]] = None,
                   cwd: Optional[str] = None, user: Union[str, int, None] = None,
                   stdin: Union[None, bytes, bytearray, memoryview, str] = None,
                   timeout: Optional[float] = None, tty: bool = False) -> ExecResult:
        """Runs ``cmd args...`` in the box and returns its :class:`ExecResult`.

        ``stdin`` (bytes or str) is fed to the process, then closed; None
        means /dev/null. ``timeout`` (seconds) kills the process group and
        raises :class:`libbox.TimeoutError`. A non-zero exit is not an error;
        a command that cannot run raises (NotFoundError, InvalidArgumentError
        for a bad cwd or user, ...). Cancelling the awaiting task kills the
        process group in the box.
        """
        return await self._run(cmd, args, env, cwd, user, stdin, timeout, tty)

    async def _run(self, cmd: Any, args: tuple, env: Any, cwd: Any, user: Any, stdin: Any, timeout: Any,
                   tty: Any) -> ExecResult:
        data = None if stdin is None else _check.data(stdin, "stdin")
        proc = self._spawn(cmd, args, env, cwd, user, data is not None, timeout, tty, collect=True)
        try:
            if data is not None:
                await proc._feed_stdin(data)
            return await proc.wait()
        except asyncio.CancelledError:
            await proc._cancel_and_settle()
            raise

    async def exec_default(self, *args: str, env: Optional[Mapping[str, str]] = None,
                           cwd: Optional[str] = None, user: Union[str, int, None] = None,
                           stdin: Union[None, bytes, bytearray, memoryview, str] = None,
                           timeout: Optional[float] = None, tty: bool = False) -> ExecResult:
        """Runs the image's command as ``docker run IMAGE [ARG...]`` does: its
        Entrypoint followed by ``args``, or by its Cmd when no args are given.
        Otherwise as :meth:`exec`."""
        return await self._run(None, args, env, cwd, user, stdin, timeout, tty)

    async def spawn(self, cmd: str, *args: str, env: Optional[Mapping[str, str]] = None,
                    cwd: Optional[str] = None, user: Union[str, int, None] = None,
                    stdin: StdinArg = None, timeout: Optional[float] = None, tty: bool = False) -> Process:
        """Starts ``cmd args...`` and returns a :class:`Process` whose output
        streams as it comes. ``stdin=True`` keeps stdin open for
        :meth:`Process.write_stdin`; bytes/str are fed then closed; None or
        False means /dev/null."""
        if stdin is None or stdin is False:
            data, pipe = None, False
        elif stdin is True:
            data, pipe = None, True
        else:
            data, pipe = _check.data(stdin, "stdin"), True
        proc = self._spawn(cmd, args, env, cwd, user, pipe, timeout, tty, collect=False)
        if data is not None:
            task = asyncio.get_running_loop().create_task(proc._feed_stdin(data))
            proc._stdin_task = task  # type: ignore[attr-defined]
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return proc

    # --- files ---

    async def copy_in(self, host_path: Any, box_path: str) -> int:
        """Copies a host file or directory into the box with ``docker cp``'s
        rules: into ``box_path`` if it is a directory (``SRC/.``: the
        contents), else to ``box_path`` (parents created); ``box_path`` may be
        relative to the box's ``/`` and resolves as in a chroot (see the
        README). Returns the number of bytes copied."""
        h = _check.path(host_path, "host_path")
        b = _check.text(box_path, "box_path")
        _, doc = await _ffi.submit(_ffi.lib.box_copy_in, self._require(), h.encode(), b.encode())
        return _bytes_of(doc)

    async def copy_out(self, box_path: str, host_path: Any) -> int:
        """Copies a box file or directory to the host with ``docker cp``'s
        rules: into ``host_path`` if it is a directory (``DIR/.``: the
        contents), else to ``host_path`` (its parent must exist). Returns the
        number of bytes copied."""
        b = _check.text(box_path, "box_path")
        h = _check.path(host_path, "host_path")
        _, doc = await _ffi.submit(_ffi.lib.box_copy_out, self._require(), b.encode(), h.encode())
        return _bytes_of(doc)

    @property
    def fs(self) -> _fs.FileSystem:
        """The box's files: ``read``, ``write``, ``list``, ``watch``... (see libbox.fs)."""
        return _fs.FileSystem(self)

    async def stats(self) -> dict[str, Any]:
        """Resource use now: ``cpu_time_ns``, ``cpu_percent``, ``memory_used``,
        ``memory_total``, ``host_rss``, ``disk_bytes``, ``processes``,
        ``execs_running``, ``execs_served``, network bytes, ``boot`` stages."""
        return await _fs.stats(self)

    async def publish(self, port: Any) -> dict[str, Any]:
        """Publishes a box port on the host while the box runs: a ``(host, box[,
        protocol])`` tuple or a dict, as in ``ports=`` (host port 0 picks a free
        one). Returns the mapping as bound: ``{"host": "127.0.0.1:41234", "box":
        80, "protocol": "tcp"}``; it is freed by :meth:`unpublish` or when the box
        stops."""
        result: dict[str, Any] = await _fs._call(self, _ffi.lib.box_publish, _check._port(port))
        return result

    async def unpublish(self, port: Any) -> None:
        """Stops publishing a port: its host address as box info shows it
        (``"127.0.0.1:41234"``), or ``{"box": 80, "protocol": "tcp"}``."""
        if isinstance(port, str):
            req = {"host": _check.text(port, "port")}
        else:
            req = _check._port(port)
            if isinstance(port, Mapping) and "host" not in port:
                req["host"] = ""
        await _fs._call(self, _ffi.lib.box_unpublish, req)

    async def processes(self) -> list[dict[str, Any]]:
        """The running execs of the box (also another process's): ``pid``,
        ``args``, ``uid``, ``user``, ``started``, ``tty``."""
        return await _fs.processes(self)

    async def kill(self, pid: int, signal: int = 9) -> None:
        """Signals an exec's process (or a descendant) by its pid in the box."""
        await _fs.kill(self, pid, signal)

    def __repr__(self) -> str:
        return f"<libbox.Box id={self._id!r} name={self._name!r}>"

    # --- snapshots ---

    async def snapshot(self, name: str, *, memory: bool = False) -> dict[str, Any]:
        """Freezes the box's files as snapshot ``name`` (unique in the home);
        the box may be running (it is paused meanwhile). Returns the
        snapshot's document (``name``, ``id``, ``parent``, ``size``,
        ``written``, ``used_by``, ``memory`` ...). ``memory=True`` also saves a
        running VM box's memory: a box created from it (or restored to it)
        resumes the machine instead of booting (sandbox boxes:
        UnsupportedError)."""
        req = {"name": _check.text(name, "name"), "memory": _check.flag(memory, "memory")}
        _, doc = await _ffi.submit(_ffi.lib.box_snapshot, self._require(), json.dumps(req).encode())
        return dict(json.loads(doc or "{}"))

    async def restore(self, name: str) -> None:
        """Rolls the stopped box back to snapshot ``name`` (its own changes are
        discarded). A running box is refused (FailedPreconditionError): stop
        it first."""
        n = _check.text(name, "name")
        await _ffi.submit(_ffi.lib.box_restore, self._require(), n.encode())

    async def export(self, directory: Any) -> str:
        """Writes the box's files as an OCI image layout in ``directory`` (new
        or empty) and returns the image reference, ``oci-layout:DIR``, that
        ``Box(image=...)`` runs."""
        d = os.path.abspath(_check.path(directory, "directory"))
        _, doc = await _ffi.submit(_ffi.lib.box_export, self._require(), d.encode())
        return str(json.loads(doc or "{}").get("image", "oci-layout:" + d))

    def clone(self, name: Optional[str] = None, **options: Any) -> "Box":
        """A new Box (not started: ``async with box.clone() as twin``) whose
        files start as this box's now (a hidden snapshot is taken, also while
        it runs). ``options`` are those of :class:`Box` but image/isolation."""
        self._require()
        options.setdefault("runtime", self._runtime)
        return Box(from_=self._id, name=name, **options)


def _source_options(image: Optional[str], isolation: Optional[str], from_: Optional[str]) -> dict[str, Any]:
    """The image, isolation and from_ part of a box's options."""
    if isolation is not None and isolation not in ("vm", "sandbox"):
        if not isinstance(isolation, str):
            raise TypeError(f"isolation must be str, not {type(isolation).__name__}")
        raise ValueError(f"isolation must be 'vm' or 'sandbox', not {isolation!r}")
    if from_ is not None:
        opts: dict[str, Any] = {"from": _check.text(from_, "from_")}
        if image is not None:
            opts["image"] = _check.text(image, "image")
        if isolation is not None:
            opts["isolation"] = isolation
        return opts
    return {"image": _check.text("busybox" if image is None else image, "image"), "isolation": isolation or "vm"}


def _bytes_of(doc: Optional[str]) -> int:
    if not doc:
        return 0
    try:
        return int(json.loads(doc).get("bytes", 0))
    except (ValueError, AttributeError, TypeError):
        return 0
