"""Beam search over image tokens: the `width` most likely sequences by summed log-probability.

One prefill, then one `lax.scan` over positions inside one `jit`, like `sampling.generate`. The batch
is `B * width` rows (`[cond; uncond]`, `2 * B * width`, with guidance); after each step the surviving
beams' parents are gathered from the KV cache along its batch axis, so every row's cache again holds
its own prefix. Beams start as one (the others at score -inf), so the first step picks `width`
distinct tokens. Scores are log-softmax of the (guided) logits; beam search is not monotone in
`width`, but `width = vocab_size ** (seq_len - 1)` keeps every prefix and so is exact.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from ar_jax.backends import Prepared
from ar_jax.decode import processors as proc
from ar_jax.models import conditions
from ar_jax.models.transformer import Transformer, TransformerConfig, init_cache, prepare

Array = jax.Array


@functools.partial(jax.jit, static_argnames=("cfg", "width", "use_cfg"))
def _beam_search(prepared: Prepared, cond: Any, schedule: Any, *, cfg: TransformerConfig, width: int,
                 use_cfg: bool) -> tuple[Array, Array]:
    """cond (batch B) -> (tokens `[B, W, T]`, summed log-probs `[B, W]`), best beam first."""
    params, model = prepared.params, Transformer(cfg, prepared.backend)
    B, W, V, C, T = conditions.batch_size(cond), width, cfg.vocab_size, cfg.prefix_len, cfg.seq_len
    rows = conditions.repeat(cond, W)  # [B * W]: sample b's beams are rows b * W .. b * W + W - 1
    if use_cfg:
        rows = conditions.concat(rows, conditions.null_like(cfg, rows))
    cache = init_cache(cfg, conditions.batch_size(rows), C + T - 1)
    logits, cache = model.apply({"params": params}, None, rows, start=0, cache=cache)
    scores = jnp.tile(jnp.where(jnp.arange(W) == 0, 0.0, -jnp.inf), (B, 1))  # [B, W]
    seqs = jnp.zeros((B, W, T), jnp.int32)

    def select(logits, pos, scores, seqs):
        """Extend every beam by every token, keep the best W: -> scores, seqs, parents, tokens `[B, W]`."""
        if use_cfg:
            logits = proc.Guidance(schedule)(logits, proc.Context(pos, T))
        logp = jax.nn.log_softmax(logits, axis=-1).reshape(B, W, V)
        scores, idx = jax.lax.top_k((scores[..., None] + logp).reshape(B, W * V), W)
        parent, tok = idx // V, (idx % V).astype(jnp.int32)
        seqs = jnp.take_along_axis(seqs, parent[..., None], axis=1)
        seqs = jax.lax.dynamic_update_slice_in_dim(seqs, tok[..., None], pos, axis=2)
        return scores, seqs, parent, tok

    def step(carry, pos):
        cache, logits, scores, seqs = carry
        scores, seqs, parent, tok = select(logits, pos, scores, seqs)
        src = (jnp.arange(B)[:, None] * W + parent).reshape(-1)  # [B * W] cache row of each new beam
        feed = tok.reshape(-1)
        if use_cfg:
            src = jnp.concatenate([src, src + B * W])
            feed = jnp.concatenate([feed, feed])
        cache = jax.tree.map(lambda c: jnp.take(c, src, axis=0), cache)  # per layer [rows, kv, len, d]
        nxt, cache = model.apply({"params": params}, feed[:, None], None, start=C + pos, cache=cache)
        return (cache, nxt[:, -1], scores, seqs), None

    (cache, logits, scores, seqs), _ = jax.lax.scan(step, (cache, logits[:, -1], scores, seqs),
                                                    jnp.arange(T - 1))
    scores, seqs, _, _ = select(logits, jnp.int32(T - 1), scores, seqs)
    return seqs, scores


def beam_search(params: Any, cfg: TransformerConfig, cond: Any, *, width: int = 4,
                cfg_scale: Any = 1.0) -> tuple[Array, Array]:
    """The `width` best token sequences `[B, width, seq_len]` given `cond` (labels `[B]`, prompt ids, ...) and their
    log-probs `[B, width]`.

    Best first: `tokens[:, 0]` is the answer. `cfg_scale` is a number or a `processors` schedule; with
    guidance, sequences are scored by the guided distribution. Width 1 is greedy decoding. Arguments are
    checked before compilation; one compilation per (batch, width, guided or not).
    """
    if isinstance(width, bool) or int(width) != width or width < 1:
        raise ValueError(f"width={width} must be an integer >= 1 (1 is greedy decoding).")
    cond = conditions.check(cfg, cond)
    schedule = proc.as_schedule(cfg_scale)
    use_cfg = proc.uses_guidance(cfg_scale)
    if use_cfg and not conditions.has_null(cfg):
        raise ValueError(f"cfg_scale={cfg_scale} needs a model trained with a null class (null_class=True); "
                         "use cfg_scale=1.0.")
    return _beam_search(prepare(params), cond, schedule, cfg=cfg, width=int(width),
                        use_cfg=use_cfg)
