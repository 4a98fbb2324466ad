"""Fault table row 1 from Python: send_signal/terminate/kill/close_stdin of
a process whose stdin is full and unread return at once and never block the
event loop; the process settles within 2 s, reported like subprocess."""

import asyncio
import signal
import time
import unittest

import libbox
from _support import BoxTestCase


class ControlWhileStdinFull(BoxTestCase):
    async def _stdin_full(self, box):
        p = await box.spawn("sleep", "60", stdin=True)

        async def feed():
            chunk = b"\0" * (1 << 20)
            for _ in range(64):
                await p.write_stdin(chunk)

        feeder = asyncio.ensure_future(feed())
        await asyncio.sleep(0.3)
        self.assertFalse(feeder.done(), "64 MiB went into a process that never reads")
        return p, feeder

    async def test_control_with_stdin_full(self):
        async with self.sandbox() as box:
            for ctl in ("terminate", "send_signal", "close_stdin", "resize", "kill"):
                p, feeder = await self._stdin_full(box)
                t0 = time.monotonic()
                if ctl == "close_stdin":
                    await p.close_stdin()
                if ctl == "resize":
                    with self.assertRaises(libbox.FailedPreconditionError):
                        await p.resize(40, 100)
                if ctl == "kill":
                    await p.kill()  # SIGKILL, as asyncio.subprocess
                elif ctl == "send_signal":
                    await p.send_signal(signal.SIGTERM)
                else:
                    await p.terminate()
                blocked = time.monotonic() - t0
                r = await asyncio.wait_for(p.wait(), 2)
                settle = time.monotonic() - t0
                want = signal.SIGKILL if ctl == "kill" else signal.SIGTERM
                self.assertEqual((r.exit_code, r.signal, r.returncode, p.returncode), (-1, want, -want, -want))
                self.assertIsInstance(r.signal, signal.Signals)
                with self.assertRaises(libbox.FailedPreconditionError):
                    await asyncio.wait_for(feeder, 2)  # woken once the process died
                self.assertLess(blocked, 2, "the event loop was blocked")
                print(f"FAULT-ROW 1 | python {ctl} with stdin full (sandbox) | {settle * 1000:.1f}ms")

    async def test_write_stdin_str(self):
        async with self.sandbox() as box:
            p = await box.spawn("cat", stdin=True)
            await p.write_stdin("héllo\n")
            await p.close_stdin()
            out = await p.stdout.read()
            self.assertEqual((await p.wait()).exit_code, 0)
            self.assertEqual(out, "héllo\n".encode())


if __name__ == "__main__":
    unittest.main()
