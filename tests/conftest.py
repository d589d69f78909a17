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

import pytest  # noqa: E402

from tests.helpers import make_test_model  # noqa: E402


@pytest.fixture
def tiny():
    return make_test_model()
