"""Test session set-up (compilation cache, optimisation level) and fixtures; the factories are in helpers.py."""

from __future__ import annotations

import os
import tempfile

# One persistent XLA compilation cache for the whole run, shared with the subprocesses tests start (they inherit
# the environment): the same smoke train step and sampler are otherwise compiled again in every process.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "ar_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The tests compile far more than they run: XLA's cheap optimisation level cuts a smoke run's time by about 40%
# on 2 cores. Semantics are XLA's either way; every benchmark in benchmarks/ runs fully optimised.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

# Each xdist worker on a core of its own, chosen before JAX starts (XLA:CPU sizes its thread pool then): the tests'
# small models run their kernels faster on one core than handed between two (ar_jax.backends.cpu.cores).
_worker, _count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _worker and hasattr(os, "sched_setaffinity") and os.environ.get("AR_JAX_TEST_PIN", "1") == "1":
    _cores = sorted(os.sched_getaffinity(0))
    if 1 < _count <= len(_cores):
        os.sched_setaffinity(0, {_cores[int(_worker.removeprefix("gw")) % len(_cores)]})

import pytest  # noqa: E402

from tests.helpers import make_test_model  # noqa: E402


@pytest.fixture
def tiny():
    return make_test_model()
