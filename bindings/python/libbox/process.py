"""Processes running in a box: results, output streams, stdin, signals.

A :class:`Process` is the Python side of one ``box_exec_queued`` call. Its
output and exit reach it on the owning event loop's thread, from the
runtime's event queue for that loop (``_ffi.EventQueue``), so no library
thread ever waits for the GIL. It must never use an exec handle after
releasing it (the handle is released on the loop thread once the exit
arrived: the library releases it then).
"""

from __future__ import annotations

import asyncio
import collections
import signal as _signal
from typing import Any, AsyncIterator, Callable, Optional

from . import _check, _ffi
from .errors import Error, FailedPreconditionError, InvalidArgumentError, UnavailableError, error_from_status

#: Runs a library call that may block off the event loop and returns a
#: future of its result (``Runtime._blocking`` of the owning runtime).
Blocking = Callable[..., "asyncio.Future[Any]"]

__all__ = ["ExecResult", "OutputStream", "Process"]


def _signal_of(sig: int) -> "Optional[_signal.Signals | int]":
    if sig <= 0:
        return None
    try:
        return _signal.Signals(sig)
    except ValueError:
        return sig


class ExecResult:
    """How a command ended and what it printed.

    ``exit_code`` is 0..255 when the process exited and -1 when a signal
    killed it (then ``signal`` is that signal, a ``signal.Signals``;
    otherwise ``signal`` is None). ``returncode`` follows ``subprocess``:
    the exit code, or the negated signal number (-15 for SIGTERM).
    ``stdout``/``stderr`` are decoded as UTF-8 (invalid bytes replaced);
    ``stdout_bytes``/``stderr_bytes`` are the raw output. ``duration`` is
    seconds from spawn to exit, as measured in the box. ``oom_killed`` is
    True when the kernel's OOM killer ended the process at the box's memory
    limit (``signal`` is SIGKILL; known for sandbox boxes with a memory
    limit).
    """

    __slots__ = ("exit_code", "signal", "stdout_bytes", "stderr_bytes", "duration", "oom_killed")

    def __init__(self, exit_code: int, signal: Optional[int], stdout_bytes: bytes = b"",
                 stderr_bytes: bytes = b"", duration: float = 0.0, oom_killed: bool = False) -> None:
        self.exit_code = exit_code
        self.signal = signal
        self.stdout_bytes = stdout_bytes
        self.stderr_bytes = stderr_bytes
        self.duration = duration
        self.oom_killed = oom_killed

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", "replace")

    @property
    def returncode(self) -> int:
        """The exit code, or -N when signal N killed the process (as in subprocess)."""
        return -int(self.signal) if self.signal else self.exit_code

    @property
    def ok(self) -> bool:
        """True when the process exited with status 0."""
        return self.exit_code == 0

    def __repr__(self) -> str:
        def short(b: bytes) -> str:
            return repr(b[:60] + (b"..." if len(b) > 60 else b""))

        return (f"ExecResult(exit_code={self.exit_code}, signal={self.signal}, "
                f"stdout={short(self.stdout_bytes)}, stderr={short(self.stderr_bytes)})")


class OutputStream:
    """One output stream of a spawned process: an async iterator of chunks.

    ``async for chunk in proc.stdout`` yields bytes in order until the
    process exited and its output was delivered. Output is buffered in
    memory until read.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._chunks: collections.deque[bytes] = collections.deque()
        self._eof = False
        self._waiter: Optional[asyncio.Future[None]] = None

    # Loop thread only.
    def _push(self, data: bytes) -> None:
        self._chunks.append(data)
        self._wake()

    def _close(self) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def at_eof(self) -> bool:
        """True when every chunk was read and no more will come."""
        return self._eof and not self._chunks

    async def read_chunk(self) -> bytes:
        """The next chunk, or b"" at the end."""
        while not self._chunks:
            if self._eof:
                return b""
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._chunks.popleft()

    async def read(self) -> bytes:
        """Everything until the end of the stream."""
        parts = []
        while True:
            chunk = await self.read_chunk()
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.read_chunk()
        if not chunk:
            raise StopAsyncIteration
        return chunk


_Exit = tuple  # (status, exit_code, signal, duration_us, message, reason)


class Process:
    """A command running in a box (from :meth:`Box.spawn`).

    ``stdout``/``stderr`` are :class:`OutputStream` objects (async iterators
    of bytes). :meth:`wait` returns the :class:`ExecResult` (with empty
    output: it was streamed). Cancelling the task awaiting :meth:`wait`
    kills the process group in the box before the cancellation propagates.
    """

    def __init__(self, *, loop: asyncio.AbstractEventLoop, collect: bool, timeout: Optional[float],
                 blocking: Blocking) -> None:
        self._blocking = blocking
        self._loop = loop
        self._collect = collect
        self._timeout = timeout
        self._handle = 0
        self._key = _ffi.new_key()
        self._bufs: tuple[list[bytes], list[bytes]] = ([], [])
        self.stdout = OutputStream(loop)
        self.stderr = OutputStream(loop)
        self._done: asyncio.Future[_Exit] = loop.create_future()
        self._exited = False
        self._released = False
        self._stdin_lock = asyncio.Lock()

    # --- loop thread (the runtime's event queue delivers here) ---

    def _feed(self, fd: int, data: bytes) -> None:
        if self._collect:
            self._bufs[fd - 1].append(data)
        else:
            (self.stdout if fd == 1 else self.stderr)._push(data)

    def _finish(self, ex: _Exit) -> None:
        self._exited = True
        self.stdout._close()
        self.stderr._close()
        self._released = True  # by the poll that took the exit
        if not self._done.done():
            self._done.set_result(ex)

    @property
    def returncode(self) -> Optional[int]:
        """None while the process runs; then, as in ``asyncio.subprocess``,
        its exit code, or -N when signal N killed it."""
        if not self._done.done():
            return None
        ex = self._done.result()
        code, sig = ex[1], ex[2]
        return -sig if sig > 0 else code

    def _result(self) -> ExecResult:
        status, code, sig, dur, msg, reason = self._done.result()
        if status != 0:
            if status == 6 and not msg:
                msg = f"the command ran longer than its timeout of {self._timeout} s and was killed"
            raise error_from_status(status, msg, reason)
        out, err = b"", b""
        if self._collect:
            out, err = b"".join(self._bufs[0]), b"".join(self._bufs[1])
            self._bufs[0][:], self._bufs[1][:] = [out], [err]  # keep one copy
        return ExecResult(code, _signal_of(sig), out, err, dur / 1e6, reason == "oom_killed")

    async def wait(self) -> ExecResult:
        """Waits for the exit. Raises the library's error when the command
        could not run (NotFoundError for a missing command, TimeoutError when
        its timeout killed it, ...)."""
        try:
            await asyncio.shield(self._done)
        except asyncio.CancelledError:
            await self._cancel_and_settle()
            raise
        return self._result()

    async def _cancel_and_settle(self) -> None:
        """Kills the process group and waits (bounded) for the exit, so the
        process is gone when the caller's cancellation propagates."""
        if self._done.done():
            return
        if not self._released:
            try:
                _ffi.check(_ffi.lib.box_exec_cancel, self._handle)
            except Error:
                pass
        try:
            await asyncio.wait_for(asyncio.shield(self._done), 10)
        except BaseException:
            pass

    async def write_stdin(self, data: "bytes | str") -> None:
        """Writes to the process's stdin (spawned with ``stdin=True``); a
        ``str`` is encoded as UTF-8, as ``exec(stdin=str)`` does. Waits
        (without blocking the event loop) while the box has no room; writes
        keep their order. Raises FailedPreconditionError once the process
        ended or its stdin was closed, even while waiting."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"write_stdin takes bytes or str, not {type(data).__name__}")
        buf = bytes(data)
        async with self._stdin_lock:
            if self._exited:
                raise FailedPreconditionError("the process has exited: its stdin is closed")
            if not buf:
                return
            try:
                await self._blocking(_ffi.check, _ffi.lib.box_exec_write_stdin, self._handle, buf,
                                              len(buf))
            except InvalidArgumentError:
                if self._exited:  # its handle went with the exit while the write started
                    raise FailedPreconditionError("the process has exited: its stdin is closed") from None
                raise

    async def close_stdin(self) -> None:
        """Closes stdin: the process reads what was written, then EOF. Never
        waits for a write in progress nor for the process to read.
        Idempotent; a no-op after the exit."""
        if self._exited:
            return
        try:
            _ffi.check(_ffi.lib.box_exec_close_stdin, self._handle)
        except FailedPreconditionError:
            pass  # it exited meanwhile

    async def _feed_stdin(self, data: bytes) -> None:
        """Writes data then closes stdin; a process that exits without
        reading everything is not an error (its result tells)."""
        try:
            await self.write_stdin(data)
            await self.close_stdin()
        except (FailedPreconditionError, UnavailableError):
            pass

    async def send_signal(self, sig: int) -> None:
        """Sends ``sig`` to the process group, as ``asyncio.subprocess``
        does. Never waits for stdin, output or the spawn. A no-op once the
        process exited."""
        await self.kill(sig)

    async def terminate(self) -> None:
        """Sends SIGTERM to the process group (as ``asyncio.subprocess``)."""
        await self.kill(_signal.SIGTERM)

    async def kill(self, sig: int = _signal.SIGKILL) -> None:
        """Sends ``sig`` (default SIGKILL, as ``asyncio.subprocess``) to the
        process group. Never waits for stdin, output or the spawn. A no-op
        once the process exited."""
        sig = _check.signal_number(sig)
        if self._exited:
            return
        try:
            _ffi.check(_ffi.lib.box_exec_signal, self._handle, sig)
        except FailedPreconditionError:
            pass  # it exited meanwhile

    async def resize(self, rows: int, cols: int) -> None:
        """Resizes the terminal of a process spawned with ``tty=True``;
        FailedPreconditionError without a terminal."""
        for v in (rows, cols):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError("rows and cols must be int")
            if not 0 < v < 65536:
                raise ValueError("rows and cols must be in 1..65535")
        if not self._exited:
            _ffi.check(_ffi.lib.box_exec_resize, self._handle, rows, cols)

    def __repr__(self) -> str:
        state = "exited" if self._exited else "running"
        return f"<libbox.Process {state}>"
