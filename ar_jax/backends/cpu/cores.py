"""How many CPU cores this process's XLA:CPU work runs on: a process-wide choice, made before JAX starts its CPU client.

XLA:CPU runs a program's independent kernels on a thread pool as large as the cores the process may use when the
client starts, and that size never changes. A small model's decoding loop is thousands of tiny kernels a second, and
handing them between cores costs more than running them: on a 2-core VM the scenes text-to-image model decodes
several times faster on one core at small batches, while GPT-B is slower on one (`benchmarks/cpu_cores.py`,
`docs/performance.md`). So the entry points (`sample.py`, the demo, the benchmarks) choose, from the model's size and
batch (`auto_cores`), before anything is computed; from Python, call `use_cores` first.
"""

from __future__ import annotations

import os

ONE_CORE_WORK = 1e8  # one core below this work a decoding step (parameters x rows): where benchmarks/cpu_cores.py ties


def allowed() -> list[int]:
    """The CPU cores this process may run on now."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def backends_started() -> bool:
    """Whether JAX has created its clients (then their thread pools are sized and `use_cores` is too late)."""
    from jax._src import xla_bridge

    return bool(getattr(xla_bridge, "backends_are_initialized", lambda: bool(xla_bridge._backends))())


def use_cores(n: int | str) -> list[int]:
    """Run this process, every thread of it, on `n` of the cores it may use ("all": leave them); returns the cores.

    Call it before JAX's first computation: XLA:CPU sizes its thread pool once, when its client starts."""
    cores = allowed()
    if n == "all" or (isinstance(n, int) and not isinstance(n, bool) and n >= len(cores)):
        return cores
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"cpu cores={n!r} must be a positive integer or 'all' (this process may use {len(cores)}).")
    if not hasattr(os, "sched_setaffinity"):
        raise ValueError(f"cpu cores={n}: this platform cannot restrict a process to some cores; use 'all'.")
    if backends_started():
        raise ValueError(f"cpu cores={n}: JAX has already started, and XLA:CPU's thread pool keeps the size it started "
                         "with; choose the cores first thing, before any JAX computation (or in a new process).")
    keep = set(cores[:n])
    for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["0"]:
        try:
            os.sched_setaffinity(int(tid), keep)
        except OSError:  # a thread that ended meanwhile
            pass
    return sorted(keep)


def auto_cores(params: int, rows: int) -> int | str:
    """1 where a decoding step is small (`params * rows` below `ONE_CORE_WORK`: rows counts CFG's doubled rows),
    else "all"."""
    return 1 if params * max(rows, 1) < ONE_CORE_WORK else "all"


def parse(value: str) -> int | str:
    """A `--cpu_cores` flag's value: "auto", "all" or a positive integer."""
    if value in ("auto", "all"):
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"--cpu_cores={value!r} must be auto, all or a positive integer.")
    return n
