"""Medusa decoding (Cai et al. 2024) with exact verification: the model's K heads propose, the model checks the
proposal in one forward pass over its cache, and the tokens kept follow exactly the model's distribution.

A round, all inside one `lax.while_loop`, for row b at position n (tokens 0..n-1 kept and in the cache):

1. token n is drawn from `p_next` (the model's distribution for it, or the residual left by the last rejection);
   the heads, read at position n - 1, give `q_1..q_K` for tokens n+1..n+K, and `d_j ~ q_j` (sequential heads one
   after another, head j reading the token before its own: x_n, then d_1, ...);
2. the model reads `[x_n, d_1..d_K]` at positions n..n+K in one call and gives `p_1..p_{K+1}`, the distributions of
   tokens n+1..n+K+1, and its hidden states;
3. `d_j` is accepted with probability `min(1, p_j(d_j) / q_j(d_j))` (Leviathan et al.'s rule, a head's distribution
   being the draft's); at the first rejection j the next round's `p_next` is `normalize(max(0, p_j - q_j))`, and if
   all K pass it is `p_{K+1}`. The heads at the last kept position propose the next round's drafts.

Each `q_j` depends only on tokens that precede its own (kept, or the drafts before it, which count only if kept)
and each `d_j` is drawn independently of the coins, so (as for a draft model) a row's tokens are exactly those of
plain sampling with the same processors (guidance schedule, temperature, top-k, top-p, min-p, typical), and greedy
decoding (one-hot distributions) equals plain greedy. Every row keeps its own position (the cache's per-row start);
rejected entries are rolled back by moving that position. A call costs one
forward pass of K + 1 tokens and keeps `1 + accepted` of them.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from ar_jax.backends import Prepared
from ar_jax.decode import processors as proc
from ar_jax.decode.speculative import _sample, accept_drafts, at_rows, exact_chain, put_rows
from ar_jax.models import conditions, medusa
from ar_jax.models.transformer import Transformer, TransformerConfig, init_cache, prepare

Array = jax.Array


PROPOSALS = ("sample", "argmax")  # a head's draft: drawn from its distribution, or its most likely token (point mass)


@functools.partial(jax.jit, static_argnames=("cfg", "greedy", "proposal"))
def _medusa(prepared: Prepared, heads: Any, cond: Any, rng: Array, chain: tuple, *, cfg: TransformerConfig,
            greedy: bool, proposal: str) -> tuple[Array, dict[str, Array]]:
    """cond (batch B) -> tokens `[B, seq_len]` and totals {proposed, accepted, rounds} (int32 scalars)."""
    model, params = Transformer(cfg, prepared.backend), prepared.params
    B, V, C, T, K = conditions.batch_size(cond), cfg.vocab_size, cfg.prefix_len, cfg.seq_len, medusa.num_heads(heads)
    use_cfg = any(isinstance(p, proc.Guidance) for p in chain)
    rows = conditions.concat(cond, conditions.null_like(cfg, cond)) if use_cfg else cond
    R = 2 * B if use_cfg else B
    dup = (lambda x: jnp.concatenate([x, x])) if use_cfg else (lambda x: x)  # [B, ...] -> rows [cond; uncond]

    def probs(logits: Array, pos: Array) -> Array:
        """Logits `[R, J, V]` for image positions `pos [B, J]` -> processed distributions `[B, J, V]`."""
        logits = proc.apply_rows(chain, logits, jnp.minimum(pos, T - 1), T)
        return jax.nn.one_hot(jnp.argmax(logits, -1), V) if greedy else jax.nn.softmax(logits, -1)

    def propose(hidden: Array, x: Array, n: Array, key: Array) -> tuple[Array, Array]:
        """Drafts `[B, K]` for tokens n+1..n+K and their distributions q `[B, K, V]`, from the heads at the hidden
        state `[R, dim]` that predicts token n `[B]`, whose value is x `[B]`."""
        drafts, qs, prev = [], [], x
        for i, k in enumerate(jax.random.split(key, K)):
            q = probs(medusa.head_step(heads, i, hidden, dup(prev))[:, None], (n + 1 + i)[:, None])[:, 0]
            q = jax.nn.one_hot(jnp.argmax(q, -1), V) if proposal == "argmax" else q
            prev = _sample(q, k)
            drafts.append(prev)
            qs.append(q)
        return jnp.stack(drafts, 1), jnp.stack(qs, 1)

    # Prefill: the condition rows; the last one predicts token 0 (model) and tokens 1..K (heads).
    zeros = jnp.zeros(B, jnp.int32)
    (logits, hidden), cache = model.apply({"params": params}, None, rows, start=0, heads="hidden",
                                          cache=init_cache(cfg, R, C + T + K))  # the last round may run K past
    p_next, h = probs(logits[:, -1:], zeros[:, None])[:, 0], hidden[:, -1]
    buf = jnp.zeros((B, T + K + 1), jnp.int32)  # [B, T + K + 1]: kept tokens, then a round's drafts
    zero = jnp.int32(0)
    stats = {"proposed": zero, "accepted": zero, "rounds": zero, "row_rounds": zero}

    def round_(carry):
        n, buf, cache, p_next, h, rng, stats = carry  # n [B]: tokens each row has kept; h [R, dim] predicts token n
        rng, kx, kd, ka = jax.random.split(rng, 4)
        x = _sample(p_next, kx)  # [B] token n
        drafts, q = propose(h, x, n, kd)  # [B, K] tokens n+1..n+K
        feed = jnp.concatenate([x[:, None], drafts], axis=1)  # [B, K + 1]
        (logits, hidden), cache = model.apply({"params": params}, dup(feed), None, start=dup(C + n), cache=cache,
                                              heads="hidden")
        p = probs(logits, n[:, None] + 1 + jnp.arange(K + 1))  # [B, K + 1, V]: tokens n+1..n+K+1
        a, res = accept_drafts(p, q, drafts, ka)
        active = n < T
        m = jnp.clip(jnp.minimum(a, T - 1 - n), 0)  # drafts kept: tokens n..n+m are final
        buf = jnp.where(active[:, None], put_rows(buf, feed, n), buf)
        p_next, h = at_rows(res, m), at_rows(hidden, dup(m))
        stats = {"proposed": stats["proposed"] + jnp.where(active, jnp.minimum(K, T - 1 - n), 0).sum(),
                 "accepted": stats["accepted"] + jnp.where(active, m, 0).sum(), "rounds": stats["rounds"] + 1,
                 "row_rounds": stats["row_rounds"] + active.sum()}
        return jnp.where(active, n + m + 1, n), buf, cache, p_next, h, rng, stats

    carry = (zeros, buf, cache, p_next, h, rng, stats)
    _, buf, *_, stats = jax.lax.while_loop(lambda c: jnp.any(c[0] < T), round_, carry)
    return buf[:, :T], stats


def generate(params: Any, cfg: TransformerConfig, heads: Any, cond: Any, rng: Array, *, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, typical_p: float = 1.0, greedy: bool = False,
             cfg_scale: Any = 1.0, proposal: str = "sample") -> tuple[Array, dict[str, Array]]:
    """Sample image tokens `[B, seq_len]` given `cond` from the model (`params`, `cfg`), its Medusa `heads`
    (`ar_jax.models.medusa`) proposing K tokens a forward pass: each drawn from its head's distribution (`proposal=
    "sample"`, accepted with probability `sum(min(p, q))`) or that distribution's most likely token ("argmax",
    accepted with probability `p(token)`); either way the samples are exactly the model's.

    Returns the tokens and totals `{"proposed", "accepted", "rounds", "row_rounds"}` (int32 scalars): per round and
    unfinished row, `proposed` counts the proposals that could still be used (at most K, fewer at the end) and
    `accepted` those kept; `rounds` counts forward passes after the prefill (until the slowest row is done);
    `row_rounds` sums the rounds of every row until it was done, so the rows kept `B * seq_len / (B + row_rounds)`
    tokens a forward pass. Sampling settings are those of `sampling.generate` (no
    repetition penalty).
    """
    if proposal not in PROPOSALS:
        raise ValueError(f"proposal={proposal!r} is not one of {PROPOSALS}.")
    if not cfg.causal:
        raise ValueError("Medusa decoding needs a causal model (causal=True).")
    if set(heads) - {"embed"} != {"w", "b", "v", "output"} or heads["output"].shape[1:] != (cfg.dim, cfg.vocab_size):
        raise ValueError(f"heads must be Medusa heads of this model ({{'w', 'b', 'v', 'output': [K, dim={cfg.dim}, "
                         f"vocab_size={cfg.vocab_size}], 'embed'?}}: `ar_jax.models.medusa.init_heads`), got "
                         f"{ {k: getattr(v, 'shape', None) for k, v in heads.items()} }.")
    chain = exact_chain(cfg, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
                        greedy=greedy, cfg_scale=cfg_scale)
    cond = conditions.check(cfg, cond)
    return _medusa(prepare(params), heads, cond, rng, chain, cfg=cfg, greedy=bool(greedy), proposal=proposal)
