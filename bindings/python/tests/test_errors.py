"""Bad input: wrong types and values stop in Python (TypeError/ValueError)
before reaching the library; library errors arrive as the right Error
subclass with the library's message. One row per input."""

from __future__ import annotations

import asyncio
import os
import signal
import unittest
from typing import Any, Awaitable, Callable

import libbox
from libbox.errors import error_from_status
from _support import BoxTestCase


class ErrorClassesTest(unittest.TestCase):
    def test_one_class_per_code(self) -> None:
        names = {1: "NotFound", 2: "AlreadyExists", 3: "InvalidArgument", 4: "FailedPrecondition",
                 5: "Unavailable", 6: "DeadlineExceeded", 7: "Canceled", 8: "Internal", 9: "Unsupported"}
        for code, name in names.items():
            with self.subTest(code=code):
                e = error_from_status(code, "the message")
                self.assertIsInstance(e, libbox.Error)
                self.assertIs(type(e), getattr(libbox, name + "Error"))
                self.assertEqual((e.code, e.name, e.message, str(e)), (code, name, "the message", "the message"))
        self.assertIsInstance(error_from_status(42, "x"), libbox.InternalError)
        self.assertIs(libbox.TimeoutError, libbox.DeadlineExceededError)
        self.assertTrue(issubclass(libbox.TimeoutError, TimeoutError))
        self.assertTrue(issubclass(libbox.TimeoutError, asyncio.TimeoutError))


BOX_ROWS: list[tuple[str, dict[str, Any], type]] = [
    ("image not str", {"image": 1}, TypeError),
    ("image empty", {"image": ""}, ValueError),
    ("image with NUL", {"image": "busy\0box"}, ValueError),
    ("name not str", {"name": 5}, TypeError),
    ("name empty", {"name": ""}, ValueError),
    ("isolation unknown", {"isolation": "kvm"}, ValueError),
    ("isolation not str", {"isolation": 1}, TypeError),
    ("cpus str", {"cpus": "2"}, TypeError),
    ("cpus bool", {"cpus": True}, TypeError),
    ("cpus zero", {"cpus": 0}, ValueError),
    ("memory negative", {"memory_mib": -1}, ValueError),
    ("memory float", {"memory_mib": 1.5}, TypeError),
    ("env not mapping", {"env": [("A", "B")]}, TypeError),
    ("env value int", {"env": {"A": 1}}, TypeError),
    ("env key with =", {"env": {"A=B": "x"}}, ValueError),
    ("env key empty", {"env": {"": "x"}}, ValueError),
    ("cwd not str", {"cwd": 1}, TypeError),
    ("volumes str", {"volumes": "/a:/b"}, TypeError),
    ("volume short tuple", {"volumes": [("/a",)]}, TypeError),
    ("volume missing box", {"volumes": [{"host": "/a"}]}, ValueError),
    ("volume unknown key", {"volumes": [{"host": "/a", "box": "/b", "rw": True}]}, ValueError),
    ("volume read_only str", {"volumes": [("/a", "/b", "yes")]}, TypeError),
    ("network str", {"network": "yes"}, TypeError),
    ("auto_remove int", {"auto_remove": 1}, TypeError),
    ("detach None", {"detach": None}, TypeError),
    ("runtime not Runtime", {"runtime": "default"}, TypeError),
]

EXEC_ROWS: list[tuple[str, tuple, dict[str, Any], type]] = [
    ("cmd not str", (1,), {}, TypeError),
    ("cmd list", (["echo", "hi"],), {}, TypeError),
    ("cmd empty", ("",), {}, ValueError),
    ("arg int", ("echo", 1), {}, TypeError),
    ("arg bytes", ("echo", b"x"), {}, TypeError),
    ("arg with NUL", ("echo", "a\0b"), {}, ValueError),
    ("arg lone surrogate", ("echo", "\udc80"), {}, ValueError),
    ("env key int", ("true",), {"env": {1: "a"}}, TypeError),
    ("cwd int", ("true",), {"cwd": 1}, TypeError),
    ("user negative", ("true",), {"user": -1}, ValueError),
    ("user float", ("true",), {"user": 1.5}, TypeError),
    ("user bool", ("true",), {"user": True}, TypeError),
    ("stdin int", ("cat",), {"stdin": 1}, TypeError),
    ("stdin list", ("cat",), {"stdin": [b"x"]}, TypeError),
    ("timeout negative", ("true",), {"timeout": -1}, ValueError),
    ("timeout zero", ("true",), {"timeout": 0}, ValueError),
    ("timeout nan", ("true",), {"timeout": float("nan")}, ValueError),
    ("timeout str", ("true",), {"timeout": "1"}, TypeError),
    ("tty int", ("true",), {"tty": 1}, TypeError),
]


class PythonSideTest(BoxTestCase):
    def test_box_options(self) -> None:
        for what, kw, exc in BOX_ROWS:
            with self.subTest(what):
                with self.assertRaises(exc):
                    libbox.Box(**kw)

    async def test_runtime_arguments(self) -> None:
        with self.assertRaises(TypeError):
            libbox.Runtime(home=1)  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            await self.rt.get(1)  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            await self.rt.get("")
        with self.assertRaises(TypeError):
            await self.rt.remove("x", force="yes")  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            await self.rt.create(unknown_option=1)  # type: ignore[call-arg]

    async def test_exec_spawn_process_arguments(self) -> None:
        async with self.sandbox() as box:
            for what, args, kw, exc in EXEC_ROWS:
                for method in (box.exec, box.spawn):
                    with self.subTest(what, method=method.__name__):
                        with self.assertRaises(exc):
                            await method(*args, **kw)
            p = await box.spawn("cat", stdin=True)
            for what, call, exc in [
                ("write list", lambda: p.write_stdin(["text"]), TypeError),
                ("write int", lambda: p.write_stdin(1), TypeError),
                ("signal 0", lambda: p.kill(0), ValueError),
                ("signal 65", lambda: p.kill(65), ValueError),
                ("signal name", lambda: p.kill("KILL"), TypeError),
                ("resize 0", lambda: p.resize(0, 80), ValueError),
            ]:
                with self.subTest(what):
                    with self.assertRaises(exc):
                        await call()
            await p.close_stdin()
            self.assertEqual((await p.wait()).exit_code, 0)
            for what, call, exc in [
                ("copy_in host int", lambda: box.copy_in(1, "/x"), TypeError),
                ("copy_in host bytes", lambda: box.copy_in(b"/x", "/x"), TypeError),
                ("copy_in box empty", lambda: box.copy_in("/x", ""), ValueError),
                ("copy_out box int", lambda: box.copy_out(1, "/x"), TypeError),
            ]:
                with self.subTest(what):
                    with self.assertRaises(exc):
                        await call()


class LibraryErrorsTest(BoxTestCase):
    async def expect(self, exc: type, call: Callable[[], Awaitable[Any]]) -> None:
        with self.assertRaises(exc) as cm:
            await call()
        self.assertTrue(cm.exception.message, "the library's message is missing")

    async def test_library_errors_map_to_subclasses(self) -> None:
        async with self.sandbox(name="taken") as box:
            p_closed = await box.spawn("cat", stdin=True)
            await p_closed.close_stdin()
            p_nostdin = await box.spawn("sleep", "1000")
            rows: list[tuple[str, type, Callable[[], Awaitable[Any]]]] = [
                ("get unknown box", libbox.NotFoundError, lambda: self.rt.get("no-such-box")),
                ("remove unknown box", libbox.NotFoundError, lambda: self.rt.remove("no-such-box")),
                ("name taken", libbox.AlreadyExistsError, lambda: self.rt.create(name="taken", isolation="sandbox")),
                ("bad name", libbox.InvalidArgumentError, lambda: self.rt.create(name="a/b", isolation="sandbox")),
                ("memory snapshot", libbox.UnsupportedError, lambda: box.snapshot("mem", memory=True)),
                ("missing command", libbox.NotFoundError, lambda: box.exec("no-such-command")),
                ("missing cwd", libbox.InvalidArgumentError, lambda: box.exec("true", cwd="/no/such/dir")),
                ("relative cwd", libbox.InvalidArgumentError, lambda: box.exec("true", cwd="rel")),
                ("unknown user", libbox.InvalidArgumentError, lambda: box.exec("true", user="nobody-here")),
                ("remove running", libbox.FailedPreconditionError, lambda: self.rt.remove("taken")),
                ("write after close_stdin", libbox.FailedPreconditionError, lambda: p_closed.write_stdin(b"x")),
                ("write without stdin", libbox.FailedPreconditionError, lambda: p_nostdin.write_stdin(b"x")),
                ("copy_in missing host path", libbox.NotFoundError,
                 lambda: box.copy_in("/no/such/host/path", "/tmp/x")),
                ("copy_in a directory onto a file (docker cp rules)", libbox.FailedPreconditionError,
                 lambda: box.copy_in(os.path.dirname(os.__file__), "/etc/passwd")),
                ("copy_out missing box path", libbox.NotFoundError,
                 lambda: box.copy_out("/no/such/box/path", os.path.join(self.home, "out"))),
            ]
            for what, exc, call in rows:
                with self.subTest(what):
                    await self.expect(exc, call)
            await p_nostdin.kill(signal.SIGKILL)
            self.assertEqual((await p_nostdin.wait()).signal, signal.SIGKILL)
            await p_closed.wait()

    async def test_spawn_failure_reason(self) -> None:
        """A command that never ran says why in ``reason``, not only in text."""
        async with self.sandbox() as box:
            rows: list[tuple[str, type, str, Callable[[], Awaitable[Any]]]] = [
                ("missing command", libbox.NotFoundError, "not_found", lambda: box.exec("no-such-command")),
                ("not executable", libbox.InvalidArgumentError, "not_executable", lambda: box.exec("/etc/passwd")),
                ("directory", libbox.InvalidArgumentError, "not_executable", lambda: box.exec("/etc")),
                ("missing cwd", libbox.InvalidArgumentError, "bad_working_dir",
                 lambda: box.exec("true", cwd="/no/such/dir")),
                ("unknown user", libbox.InvalidArgumentError, "bad_user", lambda: box.exec("true", user="nobody-here")),
            ]
            for what, exc, reason, call in rows:
                with self.subTest(what):
                    with self.assertRaises(exc) as cm:
                        await call()
                    self.assertEqual(cm.exception.reason, reason)
            with self.assertRaises(libbox.NotFoundError) as cm:
                await self.rt.get("no-such-box")
            self.assertIsNone(cm.exception.reason, "only spawn failures carry a reason")

    async def test_exec_on_stopped_and_removed_box(self) -> None:
        box = await self.sandbox(auto_remove=False).start()
        other = await self.rt.get(box.id)
        await box.stop()
        await self.expect(libbox.FailedPreconditionError, lambda: box.exec("true"))
        await self.rt.remove(box.id)
        await self.expect(libbox.FailedPreconditionError, lambda: other.exec("true"))
        await self.expect(libbox.NotFoundError, lambda: other.start())
        box.close()
        other.close()

    async def test_closed_box_and_runtime(self) -> None:
        async with self.sandbox() as box:
            pass
        await self.expect(libbox.FailedPreconditionError, lambda: box.exec("true"))
        await self.expect(libbox.FailedPreconditionError, lambda: box.info())
        unstarted = self.sandbox()
        await self.expect(libbox.FailedPreconditionError, lambda: unstarted.exec("true"))
        self.rt.close()
        self.rt.close()  # idempotent
        await self.expect(libbox.FailedPreconditionError, lambda: self.rt.list())
        await self.expect(libbox.FailedPreconditionError, lambda: self.sandbox().start())

    async def test_runtime_close_cancels_running_exec(self) -> None:
        box = await self.sandbox().start()
        task = asyncio.ensure_future(box.exec("sleep", "1000"))
        await asyncio.sleep(0.3)
        self.rt.close()
        with self.assertRaises(libbox.Error) as cm:
            await task
        self.assertIsInstance(cm.exception, (libbox.CanceledError, libbox.UnavailableError))
