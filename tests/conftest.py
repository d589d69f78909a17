"""Shared test factories: tiny models and configs, so each test states only what it varies."""

from __future__ import annotations

import jax
import pytest

from ar_jax.config import load_config_file
from ar_jax.models.transformer import TransformerConfig, init_params


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
