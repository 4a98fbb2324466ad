"""Shared test machinery: a fresh runtime on a temporary home per test, a
deadline around every async step, and a leak check after every test.

Tests never touch the user's ~/.local/share/libbox and never skip in CI
except where the machine lacks a VM (then they say how to get one).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import os
import shutil
import tempfile
import threading
import unittest
from typing import Any, Callable

import libbox

ISOLATION = "sandbox"


def deadline(seconds: float) -> Callable[[Any], Any]:
    """Gives one test its own deadline (default: the class's)."""

    def mark(fn: Any) -> Any:
        fn._deadline = seconds
        return fn

    return mark


def _bounded(fn: Any, seconds: float) -> Any:
    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await asyncio.wait_for(fn(*args, **kwargs), seconds)

    return run


class BoxTestCase(unittest.IsolatedAsyncioTestCase):
    """Every async test and async set-up runs under asyncio.wait_for; each
    test gets ``self.rt`` on a temporary home, and must leave no handles,
    threads or files behind once that runtime is closed."""

    deadline = 120.0

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        for name, fn in list(vars(cls).items()):
            if (name.startswith("test") or name in ("asyncSetUp", "asyncTearDown")) and \
                    inspect.iscoroutinefunction(fn):
                setattr(cls, name, _bounded(fn, getattr(fn, "_deadline", cls.deadline)))

    def setUp(self) -> None:
        self.threads_before = set(threading.enumerate())
        self.home = tempfile.mkdtemp(prefix="libbox-pytest-")
        self.rt = libbox.Runtime(home=self.home)

    async def asyncSetUp(self) -> None:
        # Closing a runtime blocks (by design) for a moment: do not report it as slow.
        asyncio.get_running_loop().slow_callback_duration = 10.0

    def tearDown(self) -> None:
        self.rt.close()
        shutil.rmtree(self.home)
        self.assertEqual(libbox.live_handles(), 0, "library handles leaked after the runtime closed")
        extra = [t for t in threading.enumerate() if t not in self.threads_before and t.is_alive()]
        self.assertEqual(extra, [], "threads left after the runtime closed")

    def sandbox(self, **kw: Any) -> libbox.Box:
        """A sandbox box on the builtin image in this test's runtime."""
        kw.setdefault("isolation", ISOLATION)
        return libbox.Box(runtime=self.rt, **kw)


def fault_row(row: int, what: str, settle_s: float) -> None:
    """Records one measured row of the fault table: printed, and appended
    to $LIBBOX_FAULT_LOG (JSON lines) for tools/faulttable."""
    print(f"FAULT-ROW {row} | {what} | {settle_s * 1000:.1f}ms")
    path = os.environ.get("LIBBOX_FAULT_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"row": row, "case": what, "settle_ms": round(settle_s * 1000, 3)}) + "\n")


async def eventually(pred: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    """Polls an async predicate until true, failing after ``timeout``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        if await pred():
            return
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.05)


def installed() -> bool:
    return os.environ.get("LIBBOX_TEST_INSTALLED") == "1"
