"""MaskGIT's decoding: `steps` parallel iterations inside one `lax.scan` (schedule: `ar_jax/models/maskgit.py`)."""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ar_jax import backends
from ar_jax.backends import Backend
from ar_jax.decode import processors as proc
from ar_jax.decode.sampling import SamplingParams
from ar_jax.models import conditions
from ar_jax.models.maskgit import MaskGITConfig

Array = jax.Array


def masked_after(num_masked: np.ndarray, steps: int) -> np.ndarray:
    """Masked count after each step, int32 `[steps, B]`, for rows starting with `num_masked [B]` masked tokens
    (computed on the host in float64, so the schedule is exact)."""
    t = np.arange(1, steps + 1)[:, None]  # [steps, 1]
    m = np.asarray(num_masked, np.int64)[None]
    cos = np.floor(m * np.cos(np.pi / 2 * t / steps)).astype(np.int64)
    return np.maximum(np.minimum(cos, m - t), 0).astype(np.int32)


@functools.partial(jax.jit, static_argnames=("cfg", "backend", "steps", "greedy", "use_cfg", "history"))
def _decode(params: Any, cond: Any, given: Array, known: Array, schedule: Array, rng: Array, chain: tuple,
            choice_temperature: Array, *, cfg: MaskGITConfig, backend: Backend, steps: int, greedy: bool, use_cfg: bool,
            history: bool = False) -> tuple[Array, Any]:
    """tokens `[B, T]`, and (if history) the tokens and masks after each step, each `[steps, B, T]`.

    `schedule [steps, B]`: how many tokens stay masked after each step (`masked_after`)."""
    B, T = given.shape
    rows = conditions.concat(cond, conditions.null_like(cfg.net, cond)) if use_cfg else cond
    sampler = proc.Greedy() if greedy else proc.Categorical()

    def step(carry, inp):
        tokens, masked = carry  # [B, T] int32, [B, T] bool
        t, key = inp
        ks, kg = jax.random.split(key)
        inputs = jnp.where(masked, cfg.mask_id, tokens)
        logits = cfg.logits(params, jnp.concatenate([inputs, inputs]) if use_cfg else inputs, rows, backend=backend)
        logits = proc.apply(chain, logits, proc.Context(t, steps))  # [B, T, V]
        sampled = sampler(logits, ks)
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), sampled[..., None], -1)[..., 0]
        noise = choice_temperature * (1.0 - (t + 1) / steps) * jax.random.gumbel(kg, (B, T))
        confidence = jnp.where(masked, logp + noise, jnp.inf)
        ranks = jnp.argsort(jnp.argsort(confidence, axis=-1), axis=-1)
        tokens = jnp.where(masked, sampled, tokens)
        masked = ranks < schedule[t][:, None]
        return (tokens, masked), ((jnp.where(masked, cfg.mask_id, tokens), masked) if history else None)

    keys = jax.random.split(rng, steps)
    (tokens, _), hist = jax.lax.scan(step, (given, ~known), (jnp.arange(steps), keys))
    return tokens, hist


def check_settings(cfg: MaskGITConfig, steps: Any, choice_temperature: Any, repetition_penalty: float) -> None:
    """ValueError naming a bad MaskGIT decoding setting and the fix (before compilation)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= cfg.seq_len:
        raise ValueError(f"steps={steps!r} must be an integer in [1, seq_len={cfg.seq_len}] (MaskGIT uses 8-12).")
    if not (isinstance(choice_temperature, (int, float, np.number)) and math.isfinite(choice_temperature)
            and choice_temperature >= 0):
        raise ValueError(f"choice_temperature={choice_temperature!r} must be a finite number >= 0 (0: no noise in "
                         "the choice of which tokens to reveal; MaskGIT uses 4.5).")
    if repetition_penalty != 1.0:
        raise ValueError(f"repetition_penalty={repetition_penalty} is not supported by MaskGIT decoding (tokens are "
                         "sampled in parallel); use 1.0.")


def _given_and_known(cfg: MaskGITConfig, batch: int, given: Any, known: Any, prefix: Any) -> tuple[Any, Any]:
    """Normalise (given, known) / prefix to int32 `[B, T]` and bool `[B, T]`, or ValueError."""
    T = cfg.seq_len
    if prefix is not None:
        if given is not None or known is not None:
            raise ValueError("pass either prefix or given/known, not both.")
        prefix = np.asarray(prefix)
        if prefix.ndim != 2 or prefix.shape[0] != batch or prefix.shape[1] >= T:
            raise ValueError(f"prefix must be [B={batch}, P] tokens with P < seq_len={T}, got shape {prefix.shape}.")
        given = np.zeros((batch, T), np.int32)
        given[:, : prefix.shape[1]] = prefix
        known = np.zeros((batch, T), bool)
        known[:, : prefix.shape[1]] = True
    elif (given is None) != (known is None):
        raise ValueError("inpainting needs both given (tokens [B, T]) and known (bool [B, T]); pass both or neither.")
    elif given is None:
        return np.zeros((batch, T), np.int32), np.zeros((batch, T), bool)
    given, known = np.asarray(given).reshape(batch, -1), np.asarray(known).reshape(batch, -1)
    if given.shape != (batch, T) or known.shape != (batch, T):
        raise ValueError(f"given and known must be [B={batch}, seq_len={T}], got {given.shape} and {known.shape}.")
    if known.dtype != bool:
        raise ValueError(f"known must be a boolean mask (True: token given), got dtype {known.dtype}.")
    kept = given[known]
    if kept.size and (kept.min() < 0 or kept.max() >= cfg.vocab_size):
        raise ValueError(f"given tokens must be in [0, vocab_size={cfg.vocab_size}) where known, got "
                         f"{kept.min()}..{kept.max()}.")
    return np.where(known, given, 0).astype(np.int32), known


def generate(params: Any, cfg: MaskGITConfig, cond: Any, rng: Array, *, steps: int = 10,
             choice_temperature: float = 4.5, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             greedy: bool = False, cfg_scale: Any = 1.0, min_p: float = 0.0, typical_p: float = 1.0,
             repetition_penalty: float = 1.0, given: Any = None, known: Any = None, prefix: Any = None,
             return_history: bool = False) -> Array | tuple[Array, tuple[Array, Array]]:
    """Image tokens `[B, seq_len]` given `cond` (class labels `[B]`, prompt ids, ...) by `steps` parallel decoding
    iterations.

    `given [B, T]` / `known [B, T]` (inpainting) or `prefix [B, P]` fix tokens; a guidance schedule's position is
    the step (`Linear(1, s)` ramps over steps). `return_history` adds the tokens (`mask_id` where masked) and
    the masks after each step, `[steps, B, T]` each. One compilation per (batch, steps, static choices).
    """
    SamplingParams(temperature, top_k, top_p, greedy, cfg_scale, min_p, typical_p).validate(cfg.vocab_size)
    check_settings(cfg, steps, choice_temperature, repetition_penalty)
    cond = conditions.check(cfg.net, cond)
    given, known = _given_and_known(cfg, conditions.batch_size(cond), given, known, prefix)
    use_cfg = proc.uses_guidance(cfg_scale)
    if use_cfg and not conditions.has_null(cfg.net):
        raise ValueError(f"cfg_scale={cfg_scale} needs a model trained with a null class; use cfg_scale=1.0.")
    chain: tuple = (proc.Guidance(proc.as_schedule(cfg_scale)),) if use_cfg else ()
    if not greedy:
        chain += proc.warpers(np.float32(temperature), top_k=int(top_k),
                              top_p=np.float32(top_p) if top_p < 1 else None,
                              min_p=np.float32(min_p) if min_p > 0 else None,
                              typical_p=np.float32(typical_p) if typical_p < 1 else None)
    tokens, hist = _decode(params, cond, jnp.asarray(given), jnp.asarray(known),
                           jnp.asarray(masked_after((~known).sum(1), int(steps))), rng, chain,
                           jnp.float32(choice_temperature), cfg=cfg, backend=backends.for_arrays(params),
                           steps=int(steps), greedy=bool(greedy),
                           use_cfg=use_cfg, history=return_history)
    return (tokens, hist) if return_history else tokens
