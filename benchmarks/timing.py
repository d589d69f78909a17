"""What speed.py and llamagen_speed.py (which runs without JAX) share: the median after a warm-up, one process a
benchmark."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(median seconds, warm-up seconds minus median) of `fn()`, which must block until done."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return med, max(first - med, 0.0)


def cpu() -> str:
    """This machine's CPU in a line (model, family/model numbers, cores, vector extensions), from /proc/cpuinfo:
    the same machine kind has been lent with different CPUs, so a figure names the one it ran on."""
    try:
        with open("/proc/cpuinfo") as f:
            first = f.read().split("\n\n")[0]
    except OSError:
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    info = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first.splitlines() if ":" in line)}
    flags = set(info.get("flags", "").split())
    simd = [name for flag, name in (("avx2", "AVX2"), ("fma", "FMA"), ("avx512f", "AVX-512F"),
                                    ("avx512_bf16", "AVX512-BF16")) if flag in flags]
    return (f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')}), "
            f"{os.cpu_count()} cores, {' '.join(simd) or 'no AVX2'}")


def each_in_own_process(names: list[str], argv: Callable[[str], list[str]]) -> list[dict]:
    """The last JSON line `argv(name)` prints, run in a fresh process for each name (so peak memory is its own);
    a failure is reported with its stderr and left out."""
    rows = []
    for name in names:
        proc = subprocess.run(argv(name), capture_output=True, text=True)
        if proc.returncode:
            print(f"{name} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows
