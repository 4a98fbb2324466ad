"""libbox.so's timer slack: the Go runtime's monitor thread gets a coarse one
(fewer wakes while a caller's thread holds a Go processor); the caller's
threads and every process the library starts keep the caller's."""

from __future__ import annotations

import os

from _support import BoxTestCase

MONITOR_SLACK_NS = 5_000_000  # libbox/capi/monitor.go


def thread_slacks() -> dict[int, int]:
    """Timer slack (ns) of each thread of this process, by thread id."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            # /proc/<tid>/ names the thread itself; task/<tid>/ has no timerslack_ns.
            with open(f"/proc/{tid}/timerslack_ns") as f:
                out[int(tid)] = int(f.read())
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return out


class TimerSlackTest(BoxTestCase):
    async def test_only_the_monitor_is_coarse(self) -> None:
        with open("/proc/self/timerslack_ns") as f:
            main = int(f.read())  # the main thread's, which loaded the library
        self.assertNotEqual(main, MONITOR_SLACK_NS, "the thread that loaded libbox.so has the monitor's slack")
        async with self.sandbox() as box:
            r = await box.exec("cat", "/proc/self/timerslack_ns")
            self.assertEqual(r.exit_code, 0, r.stderr)
            self.assertEqual(int(r.stdout), main, "a box process's timer slack is not the caller's")
            slacks = thread_slacks()
        if os.geteuid() != 0:
            self.skipTest("the monitor's slack needs CAP_SYS_NICE: run the tests as root")
        # The monitor, and any thread it started (they inherit its slack).
        self.assertIn(MONITOR_SLACK_NS, slacks.values(), f"no thread has the monitor's slack: {slacks}")
        self.assertNotEqual(slacks[os.getpid()], MONITOR_SLACK_NS, "the main thread has the monitor's slack")


if __name__ == "__main__":
    import unittest

    unittest.main()
