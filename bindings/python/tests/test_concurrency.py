"""Many commands at once: one box, many boxes, slow next to fast."""

from __future__ import annotations

import asyncio

from _support import BoxTestCase, deadline, eventually


class ConcurrencyTest(BoxTestCase):
    @deadline(180)
    async def test_gather_256_on_one_box(self) -> None:
        async with self.sandbox() as box:
            for _ in range(3):
                results = await asyncio.gather(
                    *(box.exec("sh", "-c", f"echo out {i}; echo err {i} >&2; exit {i % 7}") for i in range(256)))
                for i, r in enumerate(results):
                    self.assertEqual((r.exit_code, r.stdout, r.stderr), (i % 7, f"out {i}\n", f"err {i}\n"))

    @deadline(240)
    async def test_8_boxes_x_32_execs(self) -> None:
        boxes = [self.sandbox(name=f"c{b}") for b in range(8)]
        try:
            await asyncio.gather(*(b.start() for b in boxes))

            async def run(b: int, i: int) -> None:
                r = await boxes[b].exec("sh", "-c", f"echo box {b} exec {i}; hostname >/dev/null")
                self.assertEqual((r.exit_code, r.stdout), (0, f"box {b} exec {i}\n"))

            await asyncio.gather(*(run(b, i) for b in range(8) for i in range(32)))
            ids = {(await b.info())["id"] for b in boxes}
            self.assertEqual(len(ids), 8)
        finally:
            await asyncio.gather(*(b._cleanup() for b in boxes), return_exceptions=True)

    async def test_slow_execs_do_not_hold_up_fast_ones(self) -> None:
        async with self.sandbox() as box:
            slow = [asyncio.ensure_future(box.exec("sleep", "1000")) for _ in range(8)]
            fast = await asyncio.gather(*(box.exec("echo", str(i)) for i in range(128)))
            self.assertEqual([r.stdout for r in fast], [f"{i}\n" for i in range(128)])
            self.assertFalse(any(t.done() for t in slow), "a slow exec ended early")
            for t in slow:
                t.cancel()
            done = await asyncio.gather(*slow, return_exceptions=True)
            self.assertTrue(all(isinstance(d, asyncio.CancelledError) for d in done))

            async def no_sleeps() -> bool:
                r = await box.exec("sh", "-c", "ps -o comm | grep -c '^sleep' || true")
                return r.stdout.strip() == "0"

            await eventually(no_sleeps, "the cancelled sleeps to be gone")

    async def test_many_spawned_streams(self) -> None:
        async with self.sandbox() as box:
            procs = [await box.spawn("sh", "-c", f"for j in 1 2 3; do echo {i}.$j; done") for i in range(64)]

            async def drain(i: int) -> None:
                out = await procs[i].stdout.read()
                self.assertEqual(out, f"{i}.1\n{i}.2\n{i}.3\n".encode())
                self.assertEqual((await procs[i].wait()).exit_code, 0)

            await asyncio.gather(*(drain(i) for i in range(64)))

    async def test_cancellation_storm(self) -> None:
        async with self.sandbox() as box:
            slow = [asyncio.ensure_future(box.exec("sh", "-c", "sleep 1000")) for _ in range(100)]
            fast = [asyncio.ensure_future(box.exec("echo", str(i))) for i in range(100)]
            await asyncio.sleep(0.5)
            for t in slow:
                t.cancel()
            done = await asyncio.gather(*slow, *fast, return_exceptions=True)
            self.assertTrue(all(isinstance(d, asyncio.CancelledError) for d in done[:100]))
            self.assertEqual([d.stdout for d in done[100:]], [f"{i}\n" for i in range(100)])  # type: ignore[union-attr]

            async def no_sleeps() -> bool:
                r = await box.exec("sh", "-c", "ps -o comm | grep -c '^sleep' || true")
                return r.stdout.strip() == "0"

            await eventually(no_sleeps, "the cancelled execs to be gone")
