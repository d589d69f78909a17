"""Exact likelihood: per-image NLL and bits per dimension under a trained AR transformer."""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from ar_jax import backends
from ar_jax.backends import Backend
from ar_jax.models import conditions
from ar_jax.models.transformer import TransformerConfig
from ar_jax.training.steps import example_nll

_nll = jax.jit(example_nll, static_argnames=("cfg", "backend"))
EVAL_TOKENS = 16384  # tokens per evaluation batch by default (256 images of 64 tokens; 5 of 3072)


def nll_nats(params: Any, cfg: TransformerConfig, tokens: np.ndarray, cond: Any,
             batch_size: int | None = None, backend: Backend | None = None) -> np.ndarray:
    """NLL in nats of each image, `[N]`; evaluated in fixed-size padded batches (one compilation), by default of
    `EVAL_TOKENS` tokens (attention over long sequences holds `[B, heads, T, T]`). `backend`: where the params live."""
    backend = backend or backends.for_arrays(params)
    n = tokens.shape[0]
    batch_size = batch_size or max(1, min(256, EVAL_TOKENS // tokens.shape[1]))
    bs = min(batch_size, n)
    out = []
    for i in range(0, n, bs):
        t, c = tokens[i:i + bs], conditions.take(cond, slice(i, i + bs))
        pad = bs - t.shape[0]
        if pad:
            t = np.concatenate([t, np.repeat(t[:1], pad, 0)])
            c = jax.tree.map(lambda x, pad=pad: np.concatenate([x, np.repeat(x[:1], pad, 0)]), c)
        out.append(np.asarray(_nll(params, {"tokens": t, "cond": c}, cfg=cfg, backend=backend))[: bs - pad])
    return np.concatenate(out)


def bits_per_dim(params: Any, cfg: TransformerConfig, tokens: np.ndarray, cond: Any,
                 dims_per_image: int, batch_size: int | None = None, backend: Backend | None = None) -> np.ndarray:
    """Bits per dimension of each image given its condition (labels `[N]`, prompt ids, ...), `[N]`."""
    return nll_nats(params, cfg, tokens, cond, batch_size, backend) / (dims_per_image * math.log(2))


def independent_pixel_bpd(train: np.ndarray, test: np.ndarray, levels: int) -> float:
    """Bits/dim of per-position categoricals fitted on train tokens `[N, D]` (add-one smoothing), on test tokens."""
    counts = np.stack([np.bincount(train[:, d], minlength=levels) for d in range(train.shape[1])]) + 1.0
    probs = counts / counts.sum(1, keepdims=True)
    return float(-np.log2(probs[np.arange(test.shape[1]), test]).mean())
