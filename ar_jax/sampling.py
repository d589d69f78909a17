"""KV-cache sampling: one prefill, then a `lax.scan` over positions, all inside one `jit`.

The cache `[layers, B, max_len, kv_heads, head_dim]` is allocated once and written in place. With
classifier-free guidance the batch is `[conditional; unconditional]` (2B rows, null label for the
second half) and both halves are fed the same guided token. Logits processing follows LlamaGen's
order: temperature, then top-k, then top-p, then sample (or argmax when greedy).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ar_jax.models.transformer import Transformer, TransformerConfig, init_cache

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to turn logits into tokens. `top_k=0` and `top_p=1.0` switch those filters off."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    cfg_scale: float = 1.0

    def validate(self, vocab_size: int) -> None:
        """Raise ValueError naming the bad value and the fix; called before any compilation."""
        if not self.greedy and not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0; for deterministic decoding "
                             "pass greedy=True instead.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]; use 1.0 to switch nucleus sampling off.")
        if int(self.top_k) != self.top_k or not 0 <= self.top_k <= vocab_size:
            raise ValueError(f"top_k={self.top_k} must be an integer in [0, vocab_size={vocab_size}]; "
                             "use 0 to switch top-k off.")
        if not np.isfinite(self.cfg_scale):
            raise ValueError(f"cfg_scale={self.cfg_scale} must be finite; use 1.0 for no guidance.")


def top_k_filter(logits: Array, k: int) -> Array:
    """Keep the k largest logits `[B, V]` (ties at the k-th value kept), others to -inf."""
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth, -jnp.inf, logits)


def top_p_filter(logits: Array, p: Array | float) -> Array:
    """Keep the smallest set of most likely tokens whose probability reaches p; others to -inf."""
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each sorted token
    keep = before < p
    cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < cutoff, -jnp.inf, logits)


def guide(logits: Array, cfg_scale: Array | float) -> Array:
    """CFG on a `[2B, ...]` batch `[cond; uncond]`: `u + s * (c - u)` -> `[B, ...]`."""
    cond, uncond = jnp.split(logits, 2, axis=0)
    return uncond + cfg_scale * (cond - uncond)


def sample_token(logits: Array, rng: Array, temperature: Array | float, top_p: Array | float, *,
                 top_k: int, use_top_p: bool, greedy: bool) -> Array:
    """logits `[B, V]` float32 -> tokens `[B]` int32."""
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k:
        logits = top_k_filter(logits, top_k)
    if use_top_p:
        logits = top_p_filter(logits, top_p)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("cfg", "top_k", "use_top_p", "greedy", "use_cfg",
                                             "keep_logits"))
def _generate(params: Any, labels: Array, prefix: Array, rng: Array, temperature: Array, top_p: Array,
              cfg_scale: Array, *, cfg: TransformerConfig, top_k: int, use_top_p: bool, greedy: bool,
              use_cfg: bool, keep_logits: bool) -> tuple[Array, Array | None]:
    """Returns tokens `[B, seq_len]` and (if keep_logits) the logits each was drawn from `[B, T - P, V]`."""
    model = Transformer(cfg)
    B, P = prefix.shape
    C, T = cfg.cls_token_num, cfg.seq_len
    if use_cfg:
        labels = jnp.concatenate([labels, jnp.full_like(labels, cfg.null_label)])
        prefix = jnp.concatenate([prefix, prefix])
    cache = init_cache(cfg, labels.shape[0], C + T - 1)
    logits, cache = model.apply({"params": params}, prefix, labels, start=0, cache=cache)
    logits = logits[:, -1]

    def pick(logits, key):
        if use_cfg:
            logits = guide(logits, cfg_scale)
        tok = sample_token(logits, key, temperature, top_p, top_k=top_k, use_top_p=use_top_p, greedy=greedy)
        return tok, logits

    def step(carry, inp):
        cache, logits = carry
        pos, key = inp
        tok, used = pick(logits, key)
        feed = jnp.concatenate([tok, tok]) if use_cfg else tok
        nxt, cache = model.apply({"params": params}, feed[:, None], None, start=C + pos, cache=cache)
        return (cache, nxt[:, -1]), (tok, used if keep_logits else None)

    keys = jax.random.split(rng, T - P)
    (cache, logits), (toks, used) = jax.lax.scan(step, (cache, logits), (jnp.arange(P, T - 1), keys[:-1]))
    last, last_used = pick(logits, keys[-1])
    toks = jnp.concatenate([toks, last[None]]).T  # [B, T - P]
    if keep_logits:
        used = jnp.concatenate([used, last_used[None]]).transpose(1, 0, 2)
    return jnp.concatenate([prefix[:B], toks], axis=1), used


def check_labels(labels: Any, cfg: TransformerConfig) -> np.ndarray:
    """Labels as int32 `[B]`, or ValueError naming the bad label and the valid range."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] == 0:
        raise ValueError(f"labels must be a non-empty 1-D array of class ids, got shape {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}.")
    hi = max(cfg.num_classes, 1)  # an unconditional model has one class: its null label 0
    bad = labels[(labels < 0) | (labels >= hi)]
    if bad.size:
        raise ValueError(f"label {bad[0]} is outside [0, num_classes={cfg.num_classes}); pass class ids "
                         f"0..{hi - 1}.")
    return labels.astype(np.int32)


def generate(params: Any, cfg: TransformerConfig, labels: Any, rng: Array, *, prefix: Any = None,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, greedy: bool = False,
             cfg_scale: float = 1.0, return_logits: bool = False) -> Array | tuple[Array, Array]:
    """Sample image tokens `[B, cfg.seq_len]` for class `labels [B]`.

    `prefix [B, P]` fixes the first P tokens (completion). Arguments are checked before compilation;
    one compilation per (batch, prefix length, static sampling choices).
    """
    sp = SamplingParams(temperature, top_k, top_p, greedy, cfg_scale)
    sp.validate(cfg.vocab_size)
    labels = check_labels(labels, cfg)
    prefix = np.zeros((labels.shape[0], 0), np.int32) if prefix is None else np.asarray(prefix)
    if prefix.ndim != 2 or prefix.shape[0] != labels.shape[0]:
        raise ValueError(f"prefix must be [B={labels.shape[0]}, P] tokens, got shape {prefix.shape}.")
    if prefix.shape[1] >= cfg.seq_len:
        raise ValueError(f"prefix of {prefix.shape[1]} tokens leaves nothing to sample: the model's "
                         f"context holds seq_len={cfg.seq_len} image tokens; pass fewer than that.")
    if prefix.size and (prefix.min() < 0 or prefix.max() >= cfg.vocab_size):
        raise ValueError(f"prefix tokens must be in [0, vocab_size={cfg.vocab_size}), got "
                         f"{prefix.min()}..{prefix.max()}.")
    use_cfg = cfg_scale != 1.0
    if use_cfg and not cfg.null_class:
        raise ValueError(f"cfg_scale={cfg_scale} needs a model trained with a null class (null_class=True); "
                         "use cfg_scale=1.0.")
    toks, used = _generate(params, jnp.asarray(labels), jnp.asarray(prefix, jnp.int32), rng,
                           jnp.float32(max(temperature, 1e-5)), jnp.float32(top_p), jnp.float32(cfg_scale),
                           cfg=cfg, top_k=int(top_k), use_top_p=top_p < 1.0, greedy=bool(greedy),
                           use_cfg=use_cfg, keep_logits=return_logits)
    return (toks, used) if return_logits else toks
