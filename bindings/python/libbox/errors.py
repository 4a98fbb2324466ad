"""The libbox error vocabulary as Python exceptions.

Every failure the library reports is an :class:`Error` subclass, one per
class of the vocabulary (``libbox/errdefs``), carrying the library's message.
This module only maps codes to classes; it must never invent a class per
failure (messages carry the detail) nor swallow an error.
"""

from __future__ import annotations

import builtins

__all__ = [
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
    "error_from_status",
]


class Error(Exception):
    """Base class of every error the library reports.

    ``code`` is the stable numeric class (``BOX_E_*`` in libbox.h), ``name``
    the class name shared with the Go core and the Node binding, and
    ``message`` the library's text, which says what to do.

    ``reason`` says why an exec's command never ran, for errors raised by
    ``Box.exec`` / ``Process.wait``: ``"not_found"`` (a shell exits 127),
    ``"not_executable"`` (126), ``"bad_working_dir"``, ``"bad_user"``;
    ``None`` for every other error. Read it instead of the message.
    """

    code: int = 8
    name: str = "Internal"

    def __init__(self, message: str = "", reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason

    def __str__(self) -> str:
        return self.message


class NotFoundError(Error):
    """No such box, image, path or command."""

    code = 1
    name = "NotFound"


class AlreadyExistsError(Error):
    """The name is taken."""

    code = 2
    name = "AlreadyExists"


class InvalidArgumentError(Error):
    """The library rejected an argument (bad option, path, cwd, user, handle)."""

    code = 3
    name = "InvalidArgument"


class FailedPreconditionError(Error):
    """Wrong state: the box is stopped, stdin is closed, the process exited..."""

    code = 4
    name = "FailedPrecondition"


class UnavailableError(Error):
    """The box or its agent went away."""

    code = 5
    name = "Unavailable"


class DeadlineExceededError(Error, builtins.TimeoutError):
    """A timeout expired (the process was killed first).

    Also a builtin :class:`TimeoutError`, so ``except TimeoutError`` and
    ``except asyncio.TimeoutError`` catch it.
    """

    code = 6
    name = "DeadlineExceeded"


#: ``libbox.TimeoutError`` is the DeadlineExceeded class.
TimeoutError = DeadlineExceededError


class CanceledError(Error):
    """The library cancelled the call (for example its runtime was closed).

    Cancelling the asyncio task that awaits a call raises
    :class:`asyncio.CancelledError`, not this.
    """

    code = 7
    name = "Canceled"


class InternalError(Error):
    """A bug or an unexpected host failure."""

    code = 8
    name = "Internal"


class UnsupportedError(Error):
    """Not available on this host or build (for example VM isolation)."""

    code = 9
    name = "Unsupported"


_BY_CODE: dict[int, type[Error]] = {
    cls.code: cls
    for cls in (
        NotFoundError,
        AlreadyExistsError,
        InvalidArgumentError,
        FailedPreconditionError,
        UnavailableError,
        DeadlineExceededError,
        CanceledError,
        InternalError,
        UnsupportedError,
    )
}


def error_from_status(status: int, message: str | None, reason: str | None = None) -> Error:
    """Returns the exception for a non-zero library status (reason: an
    exec's spawn failure reason, or None)."""
    cls = _BY_CODE.get(status)
    if cls is None:
        return InternalError(f"libbox returned unknown status {status}: {message or 'no message'}", reason)
    return cls(message or f"libbox call failed ({cls.name})", reason)
