#!/usr/bin/env python3
"""Bench: 1,000 `true` execs through asyncio.gather (concurrency 64) on one
sandbox box, through the installed libbox package.

Prints the metric and merges ``binding.python.gather1000_ms`` into the
results file the Go bench wrote (``{"metrics": {...}, "info": {...}}``),
atomically. With ``--go-bench`` (libbox-bench), each round first runs the
same 1,000 execs through the Go API in that program (``-serve-go-execs``, a
box of its own), then the Python ones: the ratio of each round compares
both under the same load, and goes to the file's ``"ratios"`` with its
median and spread. It never fails the build over a slow number: targets
are reported, not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

import libbox

METRIC = "binding.python.gather1000_ms"
GO_METRIC = "binding.go.1000_ms"
RATIO = "Python gather 1000 / Go 1000, interleaved"
TARGET = 1.1


class GoExecs:
    """libbox-bench -serve-go-execs: the same execs through the Go API."""

    def __init__(self, bench: str) -> None:
        self.p = subprocess.Popen([bench, "-serve-go-execs"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
        line = self.p.stdout.readline() if self.p.stdout else ""
        if line.strip() != "ready":
            self.close()
            raise RuntimeError(f"{bench} -serve-go-execs did not start a box ({line!r})")

    def run(self, n: int, concurrency: int) -> tuple[float, float]:
        """(wall ms, CPU ms of the Go process) of n execs."""
        assert self.p.stdin and self.p.stdout
        self.p.stdin.write(f"{n} {concurrency}\n")
        self.p.stdin.flush()
        f = self.p.stdout.readline().split()
        if len(f) != 2:
            raise RuntimeError("libbox-bench -serve-go-execs: an exec failed (see its error above)")
        return float(f[0]), float(f[1])

    def close(self) -> None:
        if self.p.stdin:
            self.p.stdin.close()
        try:
            self.p.wait(60)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


async def measure(rounds: int, n: int, concurrency: int, isolation: str,
                  go: Optional[GoExecs]) -> tuple[list[float], list[float], list[float], list[float], list[float]]:
    """Per round: Python wall ms, CPU ms and the event loop thread's CPU ms
    (the rest is the library's own threads), and (with go) Go's wall and CPU
    ms, run just before."""
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
            if go is not None:
                go.run(2 * concurrency, concurrency)  # warm-up
            times, cpu, loop_cpu, go_times, go_cpu = [], [], [], [], []
            for _ in range(rounds):
                if go is not None:
                    ms, cms = go.run(n, concurrency)
                    go_times.append(ms)
                    go_cpu.append(cms)
                c0, l0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
                await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), 300)
                times.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
                loop_cpu.append((time.thread_time() - l0) * 1000)
            return times, cpu, loop_cpu, go_times, go_cpu
    finally:
        rt.close()
        shutil.rmtree(home, ignore_errors=True)


def ratio_entry(rounds: list[float], target: float) -> dict:
    """A "ratios" entry as the Go bench writes it (goal: at most target)."""
    lo, hi = min(rounds), max(rounds)
    status = "met" if hi <= target else "not met" if lo > target else "unstable"
    return {"median": statistics.median(rounds), "min": lo, "max": hi, "target": target, "goal": "at_most",
            "status": status, "rounds": rounds}


def merge(path: str, metrics: dict[str, float], info: dict[str, object],
          ratios: Optional[dict[str, dict]] = None) -> dict:
    doc: dict = {"metrics": {}, "info": {}}
    if os.path.exists(path):
        with open(path) as f:
            doc = json.load(f)
    doc.setdefault("metrics", {}).update(metrics)
    doc.setdefault("info", {}).update(info)
    if ratios:
        doc.setdefault("ratios", {}).update(ratios)
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
    ap.add_argument("--go-bench", help="libbox-bench: interleave each round with the same execs through Go")
    a = ap.parse_args()
    go = GoExecs(a.go_bench) if a.go_bench else None
    try:
        times, cpu, loop_cpu, go_times, go_cpu = asyncio.run(measure(a.rounds, a.n, a.concurrency, a.isolation, go))
    finally:
        if go is not None:
            go.close()
    ms = round(statistics.median(times), 2)
    metrics = {METRIC: ms, "binding.python.cpu_us_per_exec": round(statistics.median(cpu) * 1000 / a.n, 1),
               "binding.python.loop_cpu_us_per_exec": round(statistics.median(loop_cpu) * 1000 / a.n, 1)}
    info: dict[str, object] = {"binding.python.rounds_ms": [round(t, 2) for t in times],
                               "binding.python.python": sys.version.split()[0]}
    ratios = None
    if go_times:
        metrics["binding.go.interleaved_1000_ms"] = round(statistics.median(go_times), 2)
        metrics["binding.go.cpu_us_per_exec"] = round(statistics.median(go_cpu) * 1000 / a.n, 1)
        info["binding.python.go_rounds_ms"] = [round(t, 2) for t in go_times]
        ratios = {RATIO: ratio_entry([round(p / g, 3) for p, g in zip(times, go_times)], TARGET)}
    doc = merge(a.results, metrics, info, ratios)
    line = f"{METRIC:<36} {ms:>10.2f}"
    if ratios:
        r = ratios[RATIO]
        line += (f"   ({r['median']:.2f}x Go [{r['min']:.2f}..{r['max']:.2f}] interleaved, target <= {TARGET}x:"
                 f" {r['status']}; host CPU/exec {metrics['binding.python.cpu_us_per_exec']} us, of which the"
                 f" event loop thread {metrics['binding.python.loop_cpu_us_per_exec']} us, vs Go"
                 f" {metrics['binding.go.cpu_us_per_exec']} us)")
    elif isinstance(doc["metrics"].get(GO_METRIC), (int, float)) and doc["metrics"][GO_METRIC] > 0:
        go_ms = doc["metrics"][GO_METRIC]
        line += f"   ({GO_METRIC} {go_ms:.2f}, not interleaved: {ms / go_ms:.2f}x Go, target <= {TARGET}x)"
    else:
        line += f"   ({GO_METRIC} not in {a.results}: run ./build.sh bench for the comparison)"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
