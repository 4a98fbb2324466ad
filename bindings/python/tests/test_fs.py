"""The file-system API, stats and processes through the C ABI."""

from __future__ import annotations

import asyncio
import unittest

import libbox
from _support import BoxTestCase


class FileSystemTest(BoxTestCase):
    async def test_files_watch_stats_processes(self) -> None:
        async with self.sandbox() as box:
            fs = box.fs
            data = bytes(range(256)) * 4096  # 1 MiB, not UTF-8
            self.assertEqual(await fs.write("/tmp/py/a.bin", data), len(data))
            self.assertEqual(await fs.read("/tmp/py/a.bin"), data)
            self.assertEqual(await fs.read("/tmp/py/a.bin", offset=255, length=3), b"\xff\x00\x01")
            await fs.write("/tmp/py/t.txt", "héllo\n", mode=0o600)
            await fs.append("/tmp/py/t.txt", "more\n")
            self.assertEqual(await fs.read_text("/tmp/py/t.txt"), "héllo\nmore\n")
            self.assertEqual(await fs.write_many([("/tmp/py/m/1", b"1"), ("/tmp/py/m/2", "2")]), 2)
            names = [(e.path, e.type) for e in await fs.list("/tmp/py", depth=2)]
            self.assertEqual(names, [("/tmp/py/a.bin", "file"), ("/tmp/py/m", "dir"), ("/tmp/py/m/1", "file"),
                                     ("/tmp/py/m/2", "file"), ("/tmp/py/t.txt", "file")])
            st = await fs.stat("/tmp/py/t.txt")
            self.assertEqual((st.name, st.type, st.size, st.mode), ("t.txt", "file", 12, 0o600))
            self.assertTrue(await fs.exists("/tmp/py/m/1"))
            self.assertFalse(await fs.exists("/tmp/py/none"))
            await fs.mkdir("/tmp/py/d/e")
            await fs.rename("/tmp/py/m", "/tmp/py/d/e/m")
            self.assertEqual(await fs.read("/tmp/py/d/e/m/2"), b"2")
            await fs.remove("/tmp/py/d", recursive=True)
            self.assertFalse(await fs.exists("/tmp/py/d"))
            # The error vocabulary.
            with self.assertRaises(libbox.NotFoundError):
                await fs.read("/tmp/py/none")
            with self.assertRaises(libbox.FailedPreconditionError):
                await fs.read("/tmp/py")
            with self.assertRaises(libbox.InvalidArgumentError):
                await fs.read("/tmp/../etc/passwd")
            with self.assertRaises(libbox.AlreadyExistsError):
                await fs.mkdir("/tmp/py", parents=False)
            with self.assertRaises(ValueError):
                await fs.read("/tmp/py/a.bin", offset=-1)
            # Watch: an async iterator of events.
            async with await fs.watch("/tmp/py") as w:
                await fs.write("/tmp/py/new", b"x")
                await box.exec("rm", "/tmp/py/a.bin")
                seen = []
                async for ev in w:
                    seen.append((ev.type, ev.path))
                    if ("remove", "/tmp/py/a.bin") in seen:
                        break
            self.assertIn(("write", "/tmp/py/new"), seen)
            with self.assertRaises(libbox.FailedPreconditionError):
                await fs.watch("/tmp/py/new")
            # Stats and processes.
            stats = await box.stats()
            self.assertGreater(stats["memory_total"], 0)
            self.assertGreater(stats["host_rss"], 0)
            self.assertGreaterEqual(stats["execs_served"], 1)
            self.assertEqual([s["name"] for s in stats["boot"]], ["prepare", "launch", "agent"])
            proc = await box.spawn("sleep", "60")
            ps: list = []
            for _ in range(200):  # spawn returns before the process runs
                ps = [p for p in await box.processes() if p["args"] == ["sleep", "60"]]
                if ps:
                    break
                await asyncio.sleep(0.02)
            self.assertEqual(len(ps), 1, ps)
            await box.kill(ps[0]["pid"], 15)
            res = await proc.wait()
            self.assertEqual(res.signal, 15)
            with self.assertRaises(libbox.NotFoundError):
                await box.kill(ps[0]["pid"])


if __name__ == "__main__":
    unittest.main()
