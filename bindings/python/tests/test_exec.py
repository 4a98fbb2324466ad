"""Running commands: results, streaming, stdin, signals, cancellation,
timeouts, files, and callbacks that outlive their event loop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import unittest

import libbox
from _support import BoxTestCase, deadline, eventually


class SeedPatternTest(BoxTestCase):
    async def test_seed_pattern_on_default_runtime(self) -> None:
        old = os.environ.get("LIBBOX_HOME")
        os.environ["LIBBOX_HOME"] = self.home
        try:
            async with libbox.Box(image="busybox", isolation="sandbox") as box:
                results = await asyncio.gather(*(box.exec("echo", f"task {t}") for t in "ABCD"))
                info = await box.info()
                if "dir" in info:
                    self.assertTrue(info["dir"].startswith(self.home + os.sep), info["dir"])
            self.assertEqual([(r.exit_code, r.stdout) for r in results],
                             [(0, f"task {t}\n") for t in "ABCD"])
            self.assertEqual(libbox.default_runtime().home, self.home)
            self.assertEqual(await libbox.default_runtime().list(), [], "auto_remove left the box behind")
        finally:
            libbox.default_runtime().close()
            if old is None:
                del os.environ["LIBBOX_HOME"]
            else:
                os.environ["LIBBOX_HOME"] = old


class ExecTest(BoxTestCase):
    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()
        self.box = await self.sandbox().start()

    async def asyncTearDown(self) -> None:
        await self.box._cleanup()

    async def test_result_fields(self) -> None:
        r = await self.box.exec("sh", "-c", "echo out; echo err >&2; exit 3")
        self.assertEqual((r.exit_code, r.signal, r.stdout, r.stderr), (3, None, "out\n", "err\n"))
        self.assertEqual((r.stdout_bytes, r.stderr_bytes), (b"out\n", b"err\n"))
        self.assertFalse(r.ok)
        self.assertGreaterEqual(r.duration, 0)

    async def test_exec_events_come_through_the_loops_queue(self) -> None:
        # Output and exits reach Python on the loop's thread, from the
        # runtime's event queue for this loop: no library thread calls in.
        from libbox import _ffi

        kept = set(_ffi._kept_states)
        results = await asyncio.gather(*(self.box.exec("sh", "-c", "echo $$; echo e >&2") for _ in range(40)))
        self.assertTrue(all(r.ok and r.stdout.strip().isdigit() and r.stderr == "e\n" for r in results))
        self.assertEqual(set(_ffi._kept_states), kept, "a library thread called into Python for an exec")
        q = self.rt._queues[asyncio.get_running_loop()]
        self.assertEqual(q._sinks, {}, "an exec's sink outlived its exit")

    async def test_streamed_output_beyond_the_queue_limit(self) -> None:
        # 8 MiB through a stream read slowly: the library holds the exec
        # back at BOX_QUEUE_LIMIT unpolled bytes; nothing is lost or reordered.
        n = 8 << 20
        p = await self.box.spawn("sh", "-c", f"head -c {n} /dev/zero; echo done >&2")
        got, chunks = 0, 0
        async for chunk in p.stdout:
            self.assertEqual(chunk.count(0), len(chunk))
            got += len(chunk)
            chunks += 1
            if chunks % 16 == 0:
                await asyncio.sleep(0.01)
        self.assertEqual(got, n)
        self.assertEqual(await p.stderr.read(), b"done\n")
        self.assertEqual((await p.wait()).exit_code, 0)

    async def test_box_removed_mid_exec(self) -> None:
        other = self.sandbox(name="removed-mid-exec")
        await other.start()
        running = asyncio.ensure_future(other.exec("sh", "-c", "echo up; sleep 100"))
        await asyncio.sleep(0.5)
        await self.rt.remove("removed-mid-exec", force=True)
        with self.assertRaises(libbox.UnavailableError):
            await running
        other.close()
        self.assertEqual((await self.box.exec("echo", "still fine")).stdout, "still fine\n")

    async def test_env_cwd_user(self) -> None:
        r = await self.box.exec("sh", "-c", 'echo "$GREETING $(pwd) $(id -u)"', env={"GREETING": "hi"},
                                cwd="/tmp", user="1000")
        self.assertEqual(r.stdout, "hi /tmp 1000\n")
        r = await self.box.exec("id", "-u", user=0)
        self.assertEqual(r.stdout, "0\n")

    async def test_box_env_and_info(self) -> None:
        async with self.sandbox(env={"FROM_BOX": "yes"}, cwd="/tmp", name="named-box") as box:
            self.assertEqual(box.name, "named-box")
            self.assertTrue(box.id)
            r = await box.exec("sh", "-c", 'echo "$FROM_BOX $(pwd)"')
            self.assertEqual(r.stdout, "yes /tmp\n")
            info = await box.info()
            self.assertEqual((info["id"], info["name"], info["state"], info["isolation"]),
                             (box.id, "named-box", "running", "sandbox"))

    async def test_binary_output_is_kept(self) -> None:
        r = await self.box.exec("printf", "\\377\\000\\001")
        self.assertEqual(r.stdout_bytes, b"\xff\x00\x01")
        self.assertEqual(r.stdout, "\ufffd\x00\x01")

    async def test_stdin_bytes_and_str(self) -> None:
        data = bytes(range(256)) * 4096  # 1 MiB, every byte value
        r = await self.box.exec("cat", stdin=data)
        self.assertEqual(r.stdout_bytes, data)
        r = await self.box.exec("wc", "-c", stdin="héllo")
        self.assertEqual(r.stdout.strip(), "6")

    async def test_stdin_unread_is_not_an_error(self) -> None:
        r = await self.box.exec("true", stdin=b"x" * (4 << 20))
        self.assertEqual(r.exit_code, 0)

    @deadline(180)
    async def test_50mb_output(self) -> None:
        n = 50 << 20
        r = await self.box.exec("sh", "-c", f"yes abcdefg | head -c {n}")
        self.assertEqual(r.exit_code, 0)
        self.assertEqual(len(r.stdout_bytes), n)
        self.assertEqual(r.stdout_bytes, b"abcdefg\n" * (n // 8))

    async def test_spawn_streams_stdout_in_order(self) -> None:
        p = await self.box.spawn("sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo $i; i=$((i+1)); done; echo done >&2")
        chunks = [c async for c in p.stdout]
        self.assertEqual(b"".join(chunks).decode().split(), [str(i) for i in range(2000)])
        self.assertEqual(await p.stderr.read(), b"done\n")
        r = await p.wait()
        self.assertEqual((r.exit_code, r.stdout_bytes), (0, b""))
        self.assertEqual(p.returncode, 0)

    async def test_stdin_streaming(self) -> None:
        p = await self.box.spawn("cat", stdin=True)
        got = b""
        for i in range(50):
            line = f"line {i}\n".encode()
            await p.write_stdin(line)
            while not got.endswith(line):  # each line comes back before the next is written
                chunk = await p.stdout.read_chunk()
                self.assertTrue(chunk, "stdout ended early")
                got += chunk
        await p.close_stdin()
        await p.close_stdin()  # idempotent
        r = await p.wait()
        self.assertEqual(r.exit_code, 0)
        self.assertEqual(got, b"".join(f"line {i}\n".encode() for i in range(50)))
        self.assertTrue(p.stdout.at_eof())

    async def test_spawn_with_stdin_bytes(self) -> None:
        p = await self.box.spawn("tr", "a-z", "A-Z", stdin=b"shout")
        self.assertEqual(await p.stdout.read(), b"SHOUT")
        self.assertEqual((await p.wait()).exit_code, 0)

    async def test_kill_and_signal(self) -> None:
        p = await self.box.spawn("sleep", "100")
        await p.kill(signal.SIGTERM)
        r = await p.wait()
        self.assertEqual((r.exit_code, r.signal), (-1, signal.SIGTERM))
        await p.kill()  # after the exit: a no-op

    async def _alive(self, pidfile: str) -> bool:
        r = await self.box.exec("sh", "-c", f"test -s {pidfile} && kill -0 $(cat {pidfile})")
        return r.exit_code == 0

    async def _gone(self, *pidfiles: str) -> bool:
        for f in pidfiles:
            if await self._alive(f):
                return False
        return True

    async def test_cancel_exec_kills_process_group(self) -> None:
        script = "sleep 1000 & echo $! > /tmp/a.pid; sleep 1000 & echo $! > /tmp/b.pid; echo $$ > /tmp/sh.pid; wait"
        task = asyncio.ensure_future(self.box.exec("sh", "-c", script))
        await eventually(lambda: self._alive("/tmp/sh.pid"), "the shell to start")
        await eventually(lambda: self._alive("/tmp/b.pid"), "its children to start")
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        await eventually(lambda: self._gone("/tmp/sh.pid", "/tmp/a.pid", "/tmp/b.pid"),
                         "the cancelled process group to be gone")

    async def test_cancel_wait_kills_process(self) -> None:
        p = await self.box.spawn("sh", "-c", "echo $$ > /tmp/w.pid; exec sleep 1000")
        await eventually(lambda: self._alive("/tmp/w.pid"), "the process to start")
        with self.assertRaises(asyncio.TimeoutError):
            await asyncio.wait_for(p.wait(), 0.2)  # wait_for cancels the wait
        self.assertFalse(await self._alive("/tmp/w.pid"), "the process survived the cancelled wait")
        self.assertIsNotNone(p.returncode)

    async def test_timeout(self) -> None:
        with self.assertRaises(libbox.TimeoutError) as cm:
            await self.box.exec("sh", "-c", "echo $$ > /tmp/t.pid; exec sleep 1000", timeout=0.5)
        self.assertIsInstance(cm.exception, TimeoutError)
        self.assertIsInstance(cm.exception, libbox.DeadlineExceededError)
        self.assertTrue(str(cm.exception))
        await eventually(lambda: self._gone("/tmp/t.pid"), "the timed-out process to be gone")
        r = await self.box.exec("true", timeout=30)
        self.assertEqual(r.exit_code, 0)

    async def test_copy_roundtrip(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "in")
            os.makedirs(os.path.join(src, "sub"))
            with open(os.path.join(src, "sub", "f.bin"), "wb") as f:
                f.write(os.urandom(100_000))
            await self.box.copy_in(src, "/data/in")
            r = await self.box.exec("wc", "-c", "/data/in/sub/f.bin")
            self.assertEqual(r.stdout.split()[0], "100000")
            await self.box.exec("sh", "-c", "echo made in box > /data/in/new.txt")
            out = os.path.join(d, "out")
            await self.box.copy_out("/data/in", out)
            with open(os.path.join(out, "sub", "f.bin"), "rb") as a, open(os.path.join(src, "sub", "f.bin"), "rb") as b:
                self.assertEqual(a.read(), b.read())
            with open(os.path.join(out, "new.txt")) as f:
                self.assertEqual(f.read(), "made in box\n")


class OptionsTest(BoxTestCase):
    async def test_volumes(self) -> None:
        with tempfile.TemporaryDirectory() as ro, tempfile.TemporaryDirectory() as rw:
            with open(os.path.join(ro, "hello.txt"), "w") as f:
                f.write("from host\n")
            async with self.sandbox(volumes=[(ro, "/mnt/ro", True), {"host": rw, "box": "/mnt/rw"}]) as box:
                self.assertEqual((await box.exec("cat", "/mnt/ro/hello.txt")).stdout, "from host\n")
                self.assertNotEqual((await box.exec("sh", "-c", "echo x > /mnt/ro/new")).exit_code, 0)
                self.assertEqual((await box.exec("sh", "-c", "echo back > /mnt/rw/out.txt")).exit_code, 0)
            with open(os.path.join(rw, "out.txt")) as f:
                self.assertEqual(f.read(), "back\n")
            self.assertFalse(os.path.exists(os.path.join(ro, "new")))

    async def test_tty(self) -> None:
        async with self.sandbox() as box:
            r = await box.exec("sh", "-c", "test -t 0 && test -t 1 && echo on a terminal", tty=True)
            self.assertEqual(r.exit_code, 0)
            self.assertIn("on a terminal", r.stdout)
            p = await box.spawn("sh", "-c", "sleep 0.2; stty size", tty=True)
            await p.resize(30, 100)
            self.assertIn(b"30 100", await p.stdout.read())
            self.assertEqual((await p.wait()).exit_code, 0)


class LifecycleTest(BoxTestCase):
    async def test_create_get_list_stop_start_remove(self) -> None:
        box = await self.rt.create(name="life", isolation="sandbox")
        self.assertEqual((await box.info())["state"], "created")
        await box.start()
        await box.exec("sh", "-c", "echo kept > /root/file")
        await box.stop()
        self.assertEqual((await box.info())["state"], "stopped")
        with self.assertRaises(libbox.FailedPreconditionError):
            await box.exec("true")
        await box.start()
        self.assertEqual((await box.exec("cat", "/root/file")).stdout, "kept\n")
        same = await self.rt.get("life")
        self.assertEqual(same.id, box.id)
        self.assertEqual([b["name"] for b in await self.rt.list()], ["life"])
        with self.assertRaises(libbox.FailedPreconditionError):
            await self.rt.remove("life")  # running, no force
        await self.rt.remove(box.id, force=True)
        self.assertEqual(await self.rt.list(), [])
        box.close()
        same.close()
        with self.assertRaises(libbox.NotFoundError):
            await self.rt.get("life")

    async def test_auto_remove_false_keeps_box_stopped(self) -> None:
        async with self.sandbox(name="keep", auto_remove=False) as box:
            await box.exec("true")
        [info] = await self.rt.list()
        self.assertEqual((info["name"], info["state"]), ("keep", "stopped"))
        await self.rt.remove("keep")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class QueueLifetimeTest(unittest.TestCase):
    """Each loop that runs execs gets an event queue of the runtime; closing
    the runtime delivers what waits and closes every queue."""

    def cycle(self) -> None:
        home = tempfile.mkdtemp(prefix="libbox-pytest-")
        rt = libbox.Runtime(home=home)
        try:
            async def run() -> None:
                async with libbox.Box(isolation="sandbox", runtime=rt) as box:
                    rs = await asyncio.wait_for(asyncio.gather(*(box.exec("echo", str(i)) for i in range(16))), 60)
                    self.assertEqual([r.stdout for r in rs], [f"{i}\n" for i in range(16)])

            asyncio.run(run())
            asyncio.run(run())  # a second loop: a second queue
            self.assertEqual(len(rt._queues), 2)
        finally:
            rt.close()
            import shutil

            shutil.rmtree(home)
        self.assertEqual(rt._queues, {})
        self.assertEqual(libbox.live_handles(), 0)

    def test_no_fd_or_handle_left(self) -> None:
        self.cycle()  # what the library keeps for the process starts here
        before = _open_fds()
        self.cycle()
        self.assertEqual(_open_fds(), before, "file descriptors left after the runtime closed")


class LoopLifetimeTest(unittest.TestCase):
    """A box outlives event loops; an exit arriving after its loop closed is dropped quietly."""

    def test_callback_after_loop_closed(self) -> None:
        unraisable: list = []
        old_hook = sys.unraisablehook
        sys.unraisablehook = unraisable.append
        home = tempfile.mkdtemp(prefix="libbox-pytest-")
        rt = libbox.Runtime(home=home)
        try:
            async def start() -> libbox.Box:
                return await asyncio.wait_for(libbox.Box(isolation="sandbox", runtime=rt).start(), 60)

            box = asyncio.run(start())

            async def spawn_and_leave() -> None:
                p = await box.spawn("sh", "-c", "sleep 0.3; echo late")
                self.assertIsNone(p.returncode)

            asyncio.run(spawn_and_leave())  # the loop closes while the process runs

            async def after() -> str:
                await asyncio.sleep(1.0)  # the orphaned exit arrives meanwhile
                r = await asyncio.wait_for(box.exec("echo", "still fine"), 30)
                await asyncio.wait_for(box._cleanup(), 30)
                return r.stdout

            self.assertEqual(asyncio.run(after()), "still fine\n")
        finally:
            rt.close()
            sys.unraisablehook = old_hook
            import shutil

            shutil.rmtree(home)
        self.assertEqual(unraisable, [], "a library callback raised")
        self.assertEqual(libbox.live_handles(), 0)
