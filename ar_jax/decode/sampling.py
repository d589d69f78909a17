"""KV-cache sampling: one prefill, then a `lax.scan` over positions, all inside one `jit`.

The cache `[layers, B, max_len, kv_heads, head_dim]` is allocated once and written in place. With
classifier-free guidance the batch is `[conditional; unconditional]` (2B rows, null label for the
second half) and both halves are fed the same guided token. Logits processing (`ar_jax.processors`)
follows LlamaGen's order: guidance (constant or scheduled over positions), repetition penalty, then,
when sampling, temperature, top-k, top-p, min-p, typical; then sample (or argmax when greedy).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ar_jax.backends import Prepared
from ar_jax.decode import processors as proc
from ar_jax.decode.processors import guide, top_k_filter, top_p_filter  # noqa: F401  (public here too)
from ar_jax.models import conditions
from ar_jax.models.transformer import Transformer, TransformerConfig, init_cache, prepare

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to turn logits into tokens. `top_k=0`, `top_p=1.0`, `min_p=0.0`, `typical_p=1.0` and
    `repetition_penalty=1.0` switch those off; `cfg_scale` is a number or a `processors` schedule."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    cfg_scale: Any = 1.0
    min_p: float = 0.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0

    def validate(self, vocab_size: int) -> None:
        """Raise ValueError naming the bad value and the fix; called before any compilation."""
        if not self.greedy and not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0; for deterministic decoding "
                             "pass greedy=True instead.")
        proc.check_warpers(vocab_size, top_k=self.top_k, top_p=self.top_p, min_p=self.min_p,
                           typical_p=self.typical_p, repetition_penalty=self.repetition_penalty)
        proc.as_schedule(self.cfg_scale)


@functools.partial(jax.jit, static_argnames=("cfg", "top_k", "use_top_p", "greedy", "use_cfg",
                                             "keep_logits"))
def _generate(prepared: Prepared, cond: Any, prefix: Array, rng: Array, temperature: Array, top_p: Array,
              cfg_scale: Any, adjust: tuple = (), warp: tuple = (), *, cfg: TransformerConfig, top_k: int,
              use_top_p: bool, greedy: bool, use_cfg: bool, keep_logits: bool) -> tuple[Array, Array | None]:
    """Returns tokens `[B, seq_len]` and (if keep_logits) the logits each was chosen from `[B, T - P, V]`.

    `cfg_scale` is a traced number or a `processors` schedule; `adjust` holds extra adjusters (run after
    guidance, also when greedy; these logits are the ones kept), `warp` extra warpers (after top-p).
    """
    params, model = prepared.params, Transformer(cfg, prepared.backend)
    B, P = prefix.shape
    C, T = cfg.prefix_len, cfg.seq_len
    if use_cfg:
        cond = conditions.concat(cond, conditions.null_like(cfg, cond))
        prefix = jnp.concatenate([prefix, prefix])
        schedule = cfg_scale if isinstance(cfg_scale, proc.Schedule) else proc.Constant(cfg_scale)
        adjust = (proc.Guidance(schedule),) + tuple(adjust)
    if not greedy:
        warp = proc.warpers(temperature, top_k=top_k, top_p=top_p if use_top_p else None) + tuple(warp)
    sampler = proc.Greedy() if greedy else proc.Categorical()
    counts = proc.count_tokens(prefix[:B], cfg.vocab_size) if proc.needs_counts(adjust + warp) else None
    cache = init_cache(cfg, prefix.shape[0], C + T - 1)
    logits, cache = model.apply({"params": params}, prefix, cond, start=0, cache=cache)
    logits = logits[:, -1]

    def pick(logits, pos, counts, key):
        ctx = proc.Context(pos, T, counts)
        logits = proc.apply(adjust, logits, ctx)
        tok = sampler(proc.apply(() if greedy else warp, logits, ctx), key)
        if counts is not None:
            counts = counts + jax.nn.one_hot(tok, cfg.vocab_size, dtype=jnp.int32)
        return tok, logits, counts

    def step(carry, inp):
        cache, logits, counts = carry
        pos, key = inp
        tok, used, counts = pick(logits, pos, counts, key)
        feed = jnp.concatenate([tok, tok]) if use_cfg else tok
        nxt, cache = model.apply({"params": params}, feed[:, None], None, start=C + pos, cache=cache)
        return (cache, nxt[:, -1], counts), (tok, used if keep_logits else None)

    keys = jax.random.split(rng, T - P)
    (cache, logits, counts), (toks, used) = jax.lax.scan(step, (cache, logits, counts),
                                                         (jnp.arange(P, T - 1), keys[:-1]))
    last, last_used, _ = pick(logits, jnp.int32(T - 1), counts, keys[-1])
    toks = jnp.concatenate([toks, last[None]]).T  # [B, T - P]
    if keep_logits:
        used = jnp.concatenate([used, last_used[None]]).transpose(1, 0, 2)
    return jnp.concatenate([prefix[:B], toks], axis=1), used


def generate(params: Any, cfg: TransformerConfig, cond: Any, rng: Array, *, prefix: Any = None,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, greedy: bool = False,
             cfg_scale: Any = 1.0, return_logits: bool = False, min_p: float = 0.0, typical_p: float = 1.0,
             repetition_penalty: float = 1.0) -> Array | tuple[Array, Array]:
    """Sample image tokens `[B, cfg.seq_len]` given `cond` (class labels `[B]`, prompt ids `[B, text_len]`, ...:
    `ar_jax.models.conditions`).

    `prefix [B, P]` fixes the first P tokens (completion). `cfg_scale` is a number or a schedule over
    positions (`processors.Constant`, `Linear`, `Interval`). `min_p`, `typical_p` filter like top-p;
    `repetition_penalty` (CTRL's) discounts tokens already in the image, prefix included. Arguments
    are checked before compilation; one compilation per (batch, prefix length, static sampling choices).
    """
    sp = SamplingParams(temperature, top_k, top_p, greedy, cfg_scale, min_p, typical_p, repetition_penalty)
    sp.validate(cfg.vocab_size)
    cond = conditions.check(cfg, cond)
    B = conditions.batch_size(cond)
    prefix = np.zeros((B, 0), np.int32) if prefix is None else np.asarray(prefix)
    if prefix.ndim != 2 or prefix.shape[0] != B:
        raise ValueError(f"prefix must be [B={B}, P] tokens, got shape {prefix.shape}.")
    if prefix.shape[1] >= cfg.seq_len:
        raise ValueError(f"prefix of {prefix.shape[1]} tokens leaves nothing to sample: the model's "
                         f"context holds seq_len={cfg.seq_len} image tokens; pass fewer than that.")
    if prefix.size and (prefix.min() < 0 or prefix.max() >= cfg.vocab_size):
        raise ValueError(f"prefix tokens must be in [0, vocab_size={cfg.vocab_size}), got "
                         f"{prefix.min()}..{prefix.max()}.")
    use_cfg = proc.uses_guidance(cfg_scale)
    if use_cfg and not conditions.has_null(cfg):
        raise ValueError(f"cfg_scale={cfg_scale} needs a model trained with a null class (null_class=True); "
                         "use cfg_scale=1.0.")
    schedule = proc.as_schedule(cfg_scale)
    adjust = (proc.RepetitionPenalty(np.float32(repetition_penalty)),) if repetition_penalty != 1.0 else ()
    warp = tuple(cls(np.float32(v)) for cls, v, on in ((proc.MinP, min_p, min_p > 0),
                                                        (proc.Typical, typical_p, typical_p < 1)) if on)
    toks, used = _generate(prepare(params), cond, jnp.asarray(prefix, jnp.int32), rng,
                           jnp.float32(max(temperature, 1e-5)), jnp.float32(top_p),
                           schedule if isinstance(cfg_scale, proc.Schedule) else jnp.float32(cfg_scale),
                           adjust, () if greedy else warp, cfg=cfg, top_k=int(top_k), use_top_p=top_p < 1.0,
                           greedy=bool(greedy), use_cfg=use_cfg, keep_logits=return_logits)
    return (toks, used) if return_logits else toks
