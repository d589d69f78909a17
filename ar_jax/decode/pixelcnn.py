"""Sampling for the PixelCNN families: one compiled `fori_loop` over subpixels (PixelCNN) or pixels (PixelCNN++).

Each step re-runs the network on the tokens so far (cheap for small images; these models have no cache). Settings
are the AR sampler's (`SamplingParams`) through the same processors: guidance (a number or a schedule over
positions) and repetition penalty on the logits, then temperature, top-k, top-p, min-p, typical when sampling.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ar_jax.decode import processors as proc
from ar_jax.decode.sampling import SamplingParams
from ar_jax.models import conditions
from ar_jax.models.pixelcnn import PixelCNNConfig
from ar_jax.models.pixelcnn_pp import PixelCNNPPConfig, conditional_logits

Array = jax.Array


def _chain(sp: SamplingParams, use_cfg: bool) -> tuple[tuple, tuple]:
    """`(adjust, warp)` processor chains for `sp` (warp is empty when greedy)."""
    adjust: tuple = (proc.Guidance(proc.as_schedule(sp.cfg_scale)),) if use_cfg else ()
    if sp.repetition_penalty != 1.0:
        adjust += (proc.RepetitionPenalty(np.float32(sp.repetition_penalty)),)
    warp: tuple = () if sp.greedy else proc.warpers(
        np.float32(max(sp.temperature, 1e-5)), top_k=int(sp.top_k),
        top_p=np.float32(sp.top_p) if sp.top_p < 1 else None, min_p=np.float32(sp.min_p) if sp.min_p > 0 else None,
        typical_p=np.float32(sp.typical_p) if sp.typical_p < 1 else None)
    return adjust, warp


def _pick(logits: Array, tokens: Array, t: Array, rng: Array, adjust: tuple, warp: tuple, greedy: bool,
          vocab: int) -> Array:
    """The token at position `t` from logits `[B', V]` (`[2B, V]` with guidance), tokens `[B, T]` so far."""
    counts = None
    if proc.needs_counts(adjust + warp):
        before = jnp.arange(tokens.shape[1]) < t
        counts = (jax.nn.one_hot(tokens, vocab, dtype=jnp.int32) * before[None, :, None]).sum(1)
    ctx = proc.Context(t, tokens.shape[1], counts)
    logits = proc.apply(warp, proc.apply(adjust, logits, ctx), ctx)
    sampler = proc.Greedy() if greedy else proc.Categorical()
    return sampler(logits, jax.random.fold_in(rng, t))


def generate(params: Any, cfg: PixelCNNConfig | PixelCNNPPConfig, labels: Any, rng: Array, *, prefix: Any = None,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, greedy: bool = False, cfg_scale: Any = 1.0,
             min_p: float = 0.0, typical_p: float = 1.0, repetition_penalty: float = 1.0) -> Array:
    """Sampled tokens `[B, seq_len]` for class `labels [B]`; `prefix [B, P]` fixes the first P tokens.

    PixelCNN++ draws a pixel's channels in order R -> G -> B, each from its exact conditional over the levels (the
    mixture with its components weighted by the channels already drawn). Arguments are checked before compilation.
    """
    sp = SamplingParams(temperature, top_k, top_p, greedy, cfg_scale, min_p, typical_p, repetition_penalty)
    sp.validate(cfg.vocab_size)
    labels = conditions.check(cfg, labels)
    B, T = labels.shape[0], cfg.seq_len
    prefix = np.zeros((B, 0), np.int32) if prefix is None else np.asarray(prefix)
    if prefix.ndim != 2 or prefix.shape[0] != B or prefix.shape[1] >= T:
        raise ValueError(f"prefix must be [B={B}, P] tokens with P < seq_len={T}, got shape {prefix.shape}.")
    if prefix.size and (prefix.min() < 0 or prefix.max() >= cfg.vocab_size):
        raise ValueError(f"prefix tokens must be in [0, vocab_size={cfg.vocab_size}), got "
                         f"{prefix.min()}..{prefix.max()}.")
    tokens = np.zeros((B, T), np.int32)
    tokens[:, : prefix.shape[1]] = prefix
    use_cfg = proc.uses_guidance(cfg_scale)
    adjust, warp = _chain(sp, use_cfg)
    loop = _sample_pp if isinstance(cfg, PixelCNNPPConfig) else _sample
    return loop(params, jnp.asarray(labels), jnp.asarray(tokens), rng, adjust, warp, jnp.int32(prefix.shape[1]),
                cfg=cfg, greedy=bool(greedy), use_cfg=use_cfg)


@functools.partial(jax.jit, static_argnames=("cfg", "greedy", "use_cfg"))
def _sample(params: Any, labels: Array, tokens: Array, rng: Array, adjust: tuple, warp: tuple, start: Array, *,
            cfg: PixelCNNConfig, greedy: bool, use_cfg: bool) -> Array:
    """tokens `[B, T]` (first `start` given) -> all T sampled; one `fori_loop` step per subpixel."""
    if use_cfg:
        labels = jnp.concatenate([labels, jnp.full_like(labels, cfg.null_label)])

    def step(t, tokens):
        feed = jnp.concatenate([tokens, tokens]) if use_cfg else tokens
        logits = jax.lax.dynamic_index_in_dim(cfg.logits(params, feed, labels), t, axis=1, keepdims=False)
        tok = _pick(logits, tokens, t, rng, adjust, warp, greedy, cfg.vocab_size)
        return jax.lax.dynamic_update_index_in_dim(tokens, tok, t, axis=1)

    return jax.lax.fori_loop(start, cfg.seq_len, step, tokens)


@functools.partial(jax.jit, static_argnames=("cfg", "greedy", "use_cfg"))
def _sample_pp(params: Any, labels: Array, tokens: Array, rng: Array, adjust: tuple, warp: tuple, start: Array, *,
               cfg: PixelCNNPPConfig, greedy: bool, use_cfg: bool) -> Array:
    """tokens `[B, T]` (first `start` given) -> all T sampled; one `fori_loop` step (one network run) per pixel."""
    C, V = cfg.token_shape[2], cfg.vocab_size
    if use_cfg:
        labels = jnp.concatenate([labels, jnp.full_like(labels, cfg.null_label)])

    def step(p, tokens):
        feed = jnp.concatenate([tokens, tokens]) if use_cfg else tokens
        out = cfg.mixture(params, feed, labels).reshape(feed.shape[0], -1, cfg.num_outputs)
        out = jax.lax.dynamic_index_in_dim(out, p, axis=1, keepdims=False)  # [B', P]
        for c in range(C):
            pixel = jax.lax.dynamic_slice_in_dim(tokens, p * C, C, axis=1)  # [B, C]: channels < c drawn already
            feed_pixel = jnp.concatenate([pixel, pixel]) if use_cfg else pixel
            logits = conditional_logits(out, feed_pixel, V, cfg.num_mixtures)[:, c]  # [B', V]
            t = p * C + c
            tok = _pick(logits, tokens, t, rng, adjust, warp, greedy, V)
            tok = jnp.where(t < start, tokens[:, t], tok)  # keep the prefix
            tokens = jax.lax.dynamic_update_index_in_dim(tokens, tok, t, axis=1)
        return tokens

    return jax.lax.fori_loop(start // C, cfg.seq_len // C, step, tokens)
