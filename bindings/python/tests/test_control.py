"""Fault table row 1 from Python: send_signal/terminate/kill/close_stdin of
a process whose stdin is full and unread return at once and never block the
event loop; the process settles within 2 s, reported like subprocess."""

import asyncio
import json
import os
import signal
import sys
import time
import unittest

import libbox
from _support import BoxTestCase, deadline, fault_row


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
            await self._control_rows(box, "sandbox")

    @deadline(600)
    async def test_control_with_stdin_full_vm(self):
        box = await vm_box(self, self.rt)
        try:
            await self._control_rows(box, "vm")
        finally:
            await box._cleanup()

    async def _control_rows(self, box, isolation):
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
            fault_row(1, f"python {ctl} with stdin full ({isolation})", settle)

    async def test_write_stdin_str(self):
        async with self.sandbox() as box:
            p = await box.spawn("cat", stdin=True)
            await p.write_stdin("héllo\n")
            await p.close_stdin()
            out = await p.stdout.read()
            self.assertEqual((await p.wait()).exit_code, 0)
            self.assertEqual(out, "héllo\n".encode())



HOST_CHILD = """
# Row 3's host process: starts a box, gathers 64 execs, says so, then waits
# to be killed.
import asyncio, json, sys
import libbox

async def main():
    rt = libbox.Runtime(home=sys.argv[1])
    box = await rt.create(name="victim", isolation=sys.argv[2])
    await box.start()
    gather = asyncio.gather(*(box.exec("sleep", "60") for _ in range(64)))
    while len([p for p in await box.processes() if p["args"] == ["sleep", "60"]]) < 64:
        await asyncio.sleep(0.02)
    print(json.dumps({"pid": (await box.info())["backend"]["pid"]}), flush=True)
    await gather

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _tree(pid: int) -> "list[int]":
    """pid and its live descendants."""
    parent = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open(f"/proc/{e}/stat") as f:
                    parent[int(e)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out = [pid]
    for p in parent:
        q = parent[p]
        while q > 1:
            if q == pid:
                out.append(p)
                break
            q = parent.get(q, 0)
    return [p for p in out if _alive(p)]


class HostKilled(BoxTestCase):
    """Fault table row 3: the host process SIGKILLed mid-gather leaves no
    box process after 2 s; the box is listed stopped and starts again."""

    async def test_host_killed_mid_gather(self):
        await self._host_killed("sandbox", 65)  # the agent and 64 sleeps

    @deadline(600)
    async def test_host_killed_mid_gather_vm(self):
        report = libbox.doctor(self.home)  # blocks a moment; no executor thread to leave behind
        if "vm" not in report["runs"]:
            self.skipTest("VM isolation is not available here: install qemu-system-x86 and a guest kernel "
                          "(./build.sh deps does)")
        await self._host_killed("vm", 1)  # QEMU: the sleeps run in its guest

    async def _host_killed(self, isolation, at_least):
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", HOST_CHILD, self.home, isolation, stdout=asyncio.subprocess.PIPE)
        try:
            line = await asyncio.wait_for(child.stdout.readline(), 300)
            pid = json.loads(line)["pid"]
            box_procs = _tree(pid)
            self.assertGreaterEqual(len(box_procs), at_least, f"the box's host processes: {box_procs}")
            t0 = time.monotonic()
            child.kill()
            await child.wait()
            while any(_alive(p) for p in box_procs):
                self.assertLess(time.monotonic() - t0, 2, "box processes outlived the host process by 2 s")
                await asyncio.sleep(0.01)
            settle = time.monotonic() - t0
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        box = await self.rt.get("victim")
        self.assertEqual((await box.info())["state"], "stopped")
        await box.start()
        r = await box.exec("echo", "back")
        self.assertEqual(r.stdout, "back\n")
        await box.remove(force=True)
        fault_row(3, f"python host SIGKILLed mid-gather of 64 execs ({isolation})", settle)


async def vm_box(case, rt):
    """A started VM box, or the test skipped where this host cannot run one."""
    try:
        return await libbox.Box(isolation="vm", runtime=rt).start()
    except (libbox.UnsupportedError, libbox.UnavailableError) as e:
        case.skipTest(f"VM isolation is not available here ({e}): install qemu-system-x86 and a guest "
                      "kernel (./build.sh deps does)")


if __name__ == "__main__":
    unittest.main()
