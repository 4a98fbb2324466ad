#!/usr/bin/env python3
"""Bench: 1,000 `true` execs through asyncio.gather (concurrency 64) on one
sandbox box, through the installed libbox package.

Prints the metric and merges ``binding.python.gather1000_ms`` into the
results file the Go bench wrote (``{"metrics": {...}, "info": {...}}``),
atomically. It never fails the build over a slow number: targets are
reported, not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import libbox

METRIC = "binding.python.gather1000_ms"
GO_METRIC = "binding.go.1000_ms"


async def measure(rounds: int, n: int, concurrency: int, isolation: str) -> list[float]:
    home = tempfile.mkdtemp(prefix="libbox-bench-")
    rt = libbox.Runtime(home=home)
    try:
        async with libbox.Box(isolation=isolation, runtime=rt) as box:
            sem = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with sem:
                    r = await box.exec("true")
                if r.exit_code != 0:
                    raise RuntimeError(f"true exited {r.exit_code}")

            await asyncio.wait_for(asyncio.gather(*(one() for _ in range(2 * concurrency))), 120)  # warm-up
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), 300)
                times.append((time.perf_counter() - t0) * 1000)
            return times
    finally:
        rt.close()
        shutil.rmtree(home, ignore_errors=True)


def merge(path: str, metrics: dict[str, float], info: dict[str, object]) -> dict:
    doc: dict = {"metrics": {}, "info": {}}
    if os.path.exists(path):
        with open(path) as f:
            doc = json.load(f)
    doc.setdefault("metrics", {}).update(metrics)
    doc.setdefault("info", {}).update(info)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".results.", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    ap.add_argument("--results", default="bench/out/results.json")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--isolation", default="sandbox")
    a = ap.parse_args()
    times = asyncio.run(measure(a.rounds, a.n, a.concurrency, a.isolation))
    ms = round(statistics.median(times), 2)
    doc = merge(a.results, {METRIC: ms}, {"binding.python.rounds_ms": [round(t, 2) for t in times],
                                           "binding.python.python": sys.version.split()[0]})
    go = doc["metrics"].get(GO_METRIC)
    line = f"{METRIC:<36} {ms:>10.2f}"
    if isinstance(go, (int, float)) and go > 0:
        line += f"   ({GO_METRIC} {go:.2f}: {ms / go:.2f}x Go, target <= 1.20x)"
    else:
        line += f"   ({GO_METRIC} not in {a.results}: run ./build.sh bench for the comparison)"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
