"""Median of timed runs after a warm-up, shared by speed.py and llamagen_speed.py (which runs without JAX)."""

from __future__ import annotations

import statistics
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
