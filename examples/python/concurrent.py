"""The seed pattern: four commands at once in one box, then a hundred.

    python3 examples/python/concurrent.py      (LIBBOX_ISOLATION=vm|sandbox, default sandbox)
"""

import os
import sys

# This file is named like the standard library's `concurrent` package, which
# asyncio imports: keep the script's own directory off the import path.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

import asyncio  # noqa: E402
import time  # noqa: E402

import libbox  # noqa: E402


async def main() -> None:
    isolation = os.environ.get("LIBBOX_ISOLATION", "sandbox")
    t0 = time.perf_counter()
    async with libbox.Box(image="busybox", isolation=isolation) as box:
        started = time.perf_counter()
        results = await asyncio.gather(*(box.exec("echo", f"task {t}") for t in "ABCD"))
        for r in results:
            print(r.exit_code, r.stdout, end="")
        t1 = time.perf_counter()
        many = await asyncio.gather(*(box.exec("echo", f"task {i}") for i in range(100)))
        t2 = time.perf_counter()
        assert [r.stdout for r in many] == [f"task {i}\n" for i in range(100)]
        print(f"{isolation} box {box.id}: start {1000 * (started - t0):.1f} ms, "
              f"4 execs {1000 * (t1 - started):.1f} ms, 100 execs {1000 * (t2 - t1):.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
