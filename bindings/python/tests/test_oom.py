"""An exec the OOM killer ends says so (ExecResult.oom_killed); one running
beside it does not."""

from __future__ import annotations

import os
import signal
import unittest

from _support import BoxTestCase


@unittest.skipUnless(os.geteuid() == 0, "a sandbox box's memory limit needs a memory cgroup: run as root")
class OOMTest(BoxTestCase):
    async def test_oom_killed(self) -> None:
        box = await self.sandbox(memory_mib=64).start()
        try:
            # cat runs until its stdin closes, after the hog's end.
            normal = await box.spawn("cat", stdin=True)
            hog = await box.exec("awk", 'BEGIN { s = "x"; while (1) s = s s }')
            await normal.close_stdin()
            r = await normal.wait()
            self.assertEqual((hog.signal, hog.oom_killed), (signal.SIGKILL, True), hog)
            self.assertEqual((r.exit_code, r.oom_killed), (0, False))
            k = await box.exec("sh", "-c", "kill -9 $$")
            self.assertEqual((k.signal, k.oom_killed), (signal.SIGKILL, False))
        finally:
            await box._cleanup()


if __name__ == "__main__":
    unittest.main()
