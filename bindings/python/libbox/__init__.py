"""libbox: run commands in isolated Linux boxes from asyncio.

    import asyncio, libbox

    async def main():
        async with libbox.Box(image="busybox", isolation="sandbox") as box:
            results = await asyncio.gather(*(box.exec("echo", f"task {t}") for t in "ABCD"))
            for r in results:
                print(r.exit_code, r.stdout)

    asyncio.run(main())

This package binds libbox.so (the C ABI of include/libbox.h) with ctypes. It
must never block the event loop while a box works, and never let a library
callback raise or outlive its data.
"""

from __future__ import annotations

from . import _ffi
from .box import Box
from .doctor import doctor
from .errors import (
    AlreadyExistsError,
    CanceledError,
    DeadlineExceededError,
    Error,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    TimeoutError,
    UnavailableError,
    UnsupportedError,
)
from .fs import FileInfo, FileSystem, WatchEvent, Watcher
from .process import ExecResult, OutputStream, Process
from ._ffi import PullProgress
from .runtime import Image, ImageConfig, Runtime, default_runtime

__all__ = [
    "Box",
    "Runtime",
    "Image",
    "ImageConfig",
    "PullProgress",
    "Process",
    "FileSystem",
    "FileInfo",
    "WatchEvent",
    "Watcher",
    "ExecResult",
    "OutputStream",
    "default_runtime",
    "doctor",
    "live_handles",
    "library_version",
    "ABI_VERSION",
    "Error",
    "NotFoundError",
    "AlreadyExistsError",
    "InvalidArgumentError",
    "FailedPreconditionError",
    "UnavailableError",
    "DeadlineExceededError",
    "TimeoutError",
    "CanceledError",
    "InternalError",
    "UnsupportedError",
]

#: The C ABI version this package was written for (checked at import).
ABI_VERSION = _ffi.ABI_VERSION

#: Path of the loaded libbox.so.
library_path = _ffi.library_path


def live_handles() -> int:
    """Live library handles of every kind (0 once every runtime is closed)."""
    return int(_ffi.lib.box_live_handles())


def library_version() -> str:
    """The loaded library's version string."""
    v = _ffi.lib.box_version()
    return v.decode() if v else ""


def _package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("libbox")
        except PackageNotFoundError:  # a source checkout
            return library_version()
    except ImportError:
        return library_version()


__version__ = _package_version()
