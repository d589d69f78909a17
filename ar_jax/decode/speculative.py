"""Speculative decoding (Leviathan et al. 2023): a small draft proposes k tokens, the target checks them
in one forward pass, and the tokens kept follow exactly the target's distribution.

Both models are the one `Transformer` with compatible configs (same vocab, seq_len, classes, class
tokens). A round, all inside one `lax.while_loop`:

1. the draft proposes `d_0..d_{k-1}`, `d_i ~ q_i`, from its own cache;
2. the target reads `[t_{n-1}, d_0..d_{k-1}]` in one call (its cache written at their positions) and
   gives `p_0..p_k`, the distributions of tokens `n..n+k`;
3. `d_i` is accepted with probability `min(1, p_i(d_i) / q_i(d_i))`; at the first rejection `i` the
   token is drawn from `normalize(max(0, p_i - q_i))`; if all k pass, a bonus token from `p_k`.

Batches: every row advances by the same count, `m + 1` with `m` the *minimum* over rows of the
accepted lengths. A row that accepted more keeps its accepted `d_m` as token `n + m` and drops the rest;
this stays exact, since each emitted token is still "accepted draft or residual draw" for its own
position, and which rows stop early depends only on other rows' independent coins. The first round's
target call is the prefill (class tokens plus the k drafts).

Rolling back is only moving the write position `n`: attention masks keys after the query
(`key_pos <= query_pos`), and stale entries are overwritten by later rounds. Near the end the target's
window slides back so that it never runs past `max_len` (re-writing accepted positions with the same
values). The processors (guidance schedule, temperature, top-k, top-p, min-p, typical) are applied to
both models' logits alike; greedy decoding is the special case of one-hot distributions.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ar_jax.backends import Prepared
from ar_jax.decode import processors as proc
from ar_jax.decode.sampling import SamplingParams
from ar_jax.models import conditions
from ar_jax.models.transformer import Transformer, TransformerConfig, init_cache, prepare

Array = jax.Array


def _sample(probs: Array, key: Array) -> Array:
    """A token from each row of `probs [B, V]` -> `[B]` int32 (zeros are never drawn)."""
    return jax.random.categorical(key, jnp.log(probs), axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("cfg", "draft_cfg", "k", "greedy"))
def _speculate(prepared: Prepared, draft_prepared: Prepared, cond: Any, rng: Array, chain: tuple, *,
               cfg: TransformerConfig, draft_cfg: TransformerConfig, k: int, greedy: bool
               ) -> tuple[Array, dict[str, Array]]:
    """cond (batch B) -> tokens `[B, seq_len]` and totals {proposed, accepted, rounds} (int32 scalars)."""
    params, draft_params = prepared.params, draft_prepared.params
    tgt, drf = Transformer(cfg, prepared.backend), Transformer(draft_cfg, draft_prepared.backend)
    B, V, C, T = conditions.batch_size(cond), cfg.vocab_size, cfg.prefix_len, cfg.seq_len
    use_cfg = any(isinstance(p, proc.Guidance) for p in chain)
    rows = conditions.concat(cond, conditions.null_like(cfg, cond)) if use_cfg else cond
    R = 2 * B if use_cfg else B
    dup = (lambda x: jnp.concatenate([x, x])) if use_cfg else (lambda x: x)  # tokens for [cond; uncond]

    def probs(logits: Array, pos: Array) -> Array:
        """Model logits `[R, K, V]` at image positions `pos [K]` -> processed distributions `[B, K, V]`."""
        logits = proc.apply_positions(chain, logits, pos, T)
        return jax.nn.one_hot(jnp.argmax(logits, -1), V) if greedy else jax.nn.softmax(logits, -1)

    def propose(dcache, q0, n, key):
        """d_0 ~ q0 `[B, V]`, then feed d_{i-1} to get q_i and draw d_i: drafts `[B, k]`, q `[B, k, V]`."""
        keys = jax.random.split(key, k)
        d0 = _sample(q0, keys[0])

        def body(carry, inp):
            dcache, d = carry
            i, key = inp
            logits, dcache = drf.apply({"params": draft_params}, dup(d)[:, None], None, start=C + n + i - 1,
                                       cache=dcache)
            q = probs(logits, (n + i)[None])[:, 0]
            d = _sample(q, key)
            return (dcache, d), (d, q)

        (dcache, _), (ds, qs) = jax.lax.scan(body, (dcache, d0), (jnp.arange(1, k), keys[1:]))
        drafts = jnp.concatenate([d0[:, None], ds.T], axis=1)
        return dcache, drafts, jnp.concatenate([q0[:, None], qs.transpose(1, 0, 2)], axis=1)

    def accept(p, q, drafts, n, key):
        """p `[B, k+1, V]`, q `[B, k, V]`, drafts `[B, k]` -> (m, token n + m `[B]`): tokens n..n+m are kept."""
        ku, kr = jax.random.split(key)
        pd = jnp.take_along_axis(p[:, :k], drafts[..., None], -1)[..., 0]  # [B, k]
        qd = jnp.take_along_axis(q, drafts[..., None], -1)[..., 0]
        ok = jax.random.uniform(ku, (B, k)) * qd < pd  # probability min(1, p / q)
        a = jnp.sum(jnp.cumprod(ok, axis=1), axis=1)  # [B] accepted lengths
        m = jnp.minimum(jnp.min(a), T - 1 - n)
        pm = jax.lax.dynamic_index_in_dim(p, m, 1, keepdims=False)
        qm = jax.lax.dynamic_index_in_dim(jnp.pad(q, ((0, 0), (0, 1), (0, 0))), m, 1, keepdims=False)
        res = jnp.maximum(pm - qm, 0.0)  # q_k = 0: the bonus token comes from p_k
        res = jnp.where(jnp.sum(res, -1, keepdims=True) > 0, res, pm)
        dm = jax.lax.dynamic_index_in_dim(jnp.pad(drafts, ((0, 0), (0, 1))), m, 1, keepdims=False)
        return m, jnp.where(a > m, dm, _sample(res, kr))

    def finish(n, m, tok, buf, stats):
        """Write token n + m, advance to n + m + 1, count the round."""
        buf = jax.lax.dynamic_update_slice(buf, tok[:, None], (0, n + m))
        stats = {"proposed": stats["proposed"] + jnp.minimum(k, T - 1 - n),
                 "accepted": stats["accepted"] + m, "rounds": stats["rounds"] + 1}
        return n + m + 1, buf, stats

    # Round 0: prefill the draft with the class tokens, prefill the target with class tokens + drafts.
    rng, kp, ka = jax.random.split(rng, 3)
    dcache = init_cache(draft_cfg, R, C + T + k)  # the draft may run k - 1 tokens past the end
    dlogits, dcache = drf.apply({"params": draft_params}, None, rows, start=0, cache=dcache)
    dcache, drafts, q = propose(dcache, probs(dlogits[:, -1:], jnp.zeros(1, jnp.int32))[:, 0], 0, kp)
    tlogits, tcache = tgt.apply({"params": params}, dup(drafts), rows, start=0,
                                cache=init_cache(cfg, R, C + T))
    m, tok = accept(probs(tlogits[:, C - 1:], jnp.arange(k + 1)), q, drafts, 0, ka)
    buf = jnp.zeros((B, T + k), jnp.int32).at[:, :k].set(drafts)  # [B, T + k]: tokens, then drafts
    zero = jnp.int32(0)
    n, buf, stats = finish(zero, m, tok, buf, {"proposed": zero, "accepted": zero, "rounds": zero})

    def round_(carry):
        n, buf, tcache, dcache, rng, stats = carry
        rng, kp, ka = jax.random.split(rng, 3)
        # Draft: feed the last two accepted tokens (the one before may be missing), read q for token n.
        ws = jnp.maximum(n - 2, 0)
        dl, dcache = drf.apply({"params": draft_params}, dup(jax.lax.dynamic_slice_in_dim(buf, ws, 2, 1)), None,
                               start=C + ws, cache=dcache)
        q0 = probs(jax.lax.dynamic_slice_in_dim(dl, n - 1 - ws, 1, 1), n[None])[:, 0]
        dcache, drafts, q = propose(dcache, q0, n, kp)
        buf = jax.lax.dynamic_update_slice(buf, drafts, (0, n))
        # Target: one call over [t_{n-1}, d_0..d_{k-1}], slid back so it ends by the last position.
        ts = jnp.minimum(n - 1, T - k - 1)
        tl, tcache = tgt.apply({"params": params}, dup(jax.lax.dynamic_slice_in_dim(buf, ts, k + 1, 1)), None,
                               start=C + ts, cache=tcache)
        tl = jax.lax.dynamic_slice_in_dim(jnp.pad(tl, ((0, 0), (0, k), (0, 0))), n - 1 - ts, k + 1, 1)
        m, tok = accept(probs(tl, n + jnp.arange(k + 1)), q, drafts, n, ka)
        n, buf, stats = finish(n, m, tok, buf, stats)
        return n, buf, tcache, dcache, rng, stats

    n, buf, *_, stats = jax.lax.while_loop(lambda c: c[0] < T, round_, (n, buf, tcache, dcache, rng, stats))
    return buf[:, :T], stats


def check_draft(cfg: TransformerConfig, draft_cfg: TransformerConfig) -> None:
    """ValueError unless the draft reads and writes the same token sequences as the target."""
    for name in ("vocab_size", "seq_len", "num_classes", "cls_token_num", "null_class", "condition", "text_len",
                 "text_vocab_size", "caption_dim"):
        a, b = getattr(cfg, name), getattr(draft_cfg, name)
        if a != b:
            raise ValueError(f"draft and target disagree on {name}: target has {a}, draft has {b}; "
                             f"use a draft config with {name}={a}.")
    if not draft_cfg.causal or not cfg.causal:
        raise ValueError("speculative decoding needs causal models (causal=True) for target and draft.")


def generate(params: Any, cfg: TransformerConfig, draft_params: Any, draft_cfg: TransformerConfig, cond: Any,
             rng: Array, *, k: int = 4, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             min_p: float = 0.0, typical_p: float = 1.0, greedy: bool = False,
             cfg_scale: Any = 1.0) -> tuple[Array, dict[str, Array]]:
    """Sample image tokens `[B, seq_len]` given `cond` from the target (`params`, `cfg`) with a draft proposing k at
    a time.

    Returns the tokens and acceptance totals `{"proposed", "accepted", "rounds"}` (int32 scalars): per
    round, `proposed` counts the drafts that could still be used (at most k, fewer at the end) and
    `accepted` those kept for every row (the batch minimum). Sampling settings are those of
    `sampling.generate` (no repetition penalty) and apply to both models' distributions.
    """
    if isinstance(k, bool) or int(k) != k or not 1 <= k < cfg.seq_len:
        raise ValueError(f"k={k} must be an integer in [1, seq_len - 1 = {cfg.seq_len - 1}]: the target checks "
                         "k drafts plus the token before them in one window of the sequence.")
    check_draft(cfg, draft_cfg)
    SamplingParams(temperature, top_k, top_p, greedy, cfg_scale, min_p, typical_p).validate(cfg.vocab_size)
    cond = conditions.check(cfg, cond)
    chain: tuple = ()
    if proc.uses_guidance(cfg_scale):
        if not conditions.has_null(cfg):
            raise ValueError(f"cfg_scale={cfg_scale} needs models trained with a null class (null_class=True); "
                             "use cfg_scale=1.0.")
        chain += (proc.Guidance(proc.as_schedule(cfg_scale)),)
    if not greedy:
        chain += proc.warpers(np.float32(temperature), top_k=int(top_k),
                              top_p=np.float32(top_p) if top_p < 1 else None,
                              min_p=np.float32(min_p) if min_p > 0 else None,
                              typical_p=np.float32(typical_p) if typical_p < 1 else None)
    return _speculate(prepare(params), prepare(draft_params), cond, rng, chain, cfg=cfg,
                      draft_cfg=draft_cfg, k=int(k), greedy=bool(greedy))
