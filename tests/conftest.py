"""Shared test factories: tiny models and configs, so each test states only what it varies."""

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

import jax  # noqa: E402
import pytest  # noqa: E402

from ar_jax.config import load_config_file  # noqa: E402
from ar_jax.models.transformer import TransformerConfig, init_params  # noqa: E402


def make_test_model(**overrides):
    """A tiny random transformer `(cfg, params)`; non-zero output layer so logits are informative."""
    kw = dict(vocab_size=13, seq_len=16, num_classes=3, dim=32, num_layers=2, num_heads=4, mlp_dim=48)
    kw.update(overrides)
    cfg = TransformerConfig(**kw)
    params, _ = init_params(cfg, jax.random.key(0))
    params["output"] = jax.random.normal(jax.random.key(1), params["output"].shape) * 0.5
    return cfg, params


def smoke_config(**overrides):
    """The digits smoke config with `key=value` overrides (dotted keys for nested fields)."""
    config = load_config_file("configs/digits_pixels.py:smoke")
    config.unlock()
    for key, value in overrides.items():
        node = config
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    config.lock()
    return config


@pytest.fixture
def tiny():
    return make_test_model()
