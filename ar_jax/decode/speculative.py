"""Speculative decoding (Leviathan et al. 2023): a small draft proposes k tokens, the target checks them
in one forward pass, and the tokens kept follow exactly the target's distribution.

Both models are the one `Transformer` with compatible configs (same vocab, seq_len, classes, class
tokens). A round, all inside one `lax.while_loop`:

1. the draft proposes `d_0..d_{k-1}`, `d_i ~ q_i`, from its own cache;
2. the target reads `[t_{n-1}, d_0..d_{k-1}]` in one call (its cache written at their positions) and
   gives `p_0..p_k`, the distributions of tokens `n..n+k`;
3. `d_i` is accepted with probability `min(1, p_i(d_i) / q_i(d_i))`; at the first rejection `i` the
   token is drawn from `normalize(max(0, p_i - q_i))`; if all k pass, a bonus token from `p_k`.

Batches: every row keeps its own position `n_b` in the cache (the model's cached calls take one start per row), so
each row advances by its own accepted length `m_b + 1`; a row that has finished idles (its results dropped) until
the last one does. Exactness is per row, as for batch 1: each emitted token is "accepted draft or residual draw"
for its own position. The first round's target call is the prefill (condition rows plus the k drafts).

Rolling back is only moving a row's write position: attention masks keys after the query
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


def take_rows(x: Array, start: Array, size: int) -> Array:
    """`x[b, start_b : start_b + size]` for every row: `x [B, L, ...]`, `start [B]` -> `[B, size, ...]`."""
    return jax.vmap(lambda r, s: jax.lax.dynamic_slice_in_dim(r, s, size, 0))(x, start)


def put_rows(x: Array, new: Array, start: Array) -> Array:
    """`x[b, start_b : start_b + S] = new[b]` for every row: `x [B, L]`, `new [B, S]`, `start [B]`."""
    return jax.vmap(lambda r, u, s: jax.lax.dynamic_update_slice(r, u, (s,)))(x, new, start)


def at_rows(x: Array, idx: Array) -> Array:
    """`x[b, idx_b]` for every row: `x [B, L, ...]`, `idx [B]` -> `[B, ...]`."""
    return jax.vmap(lambda r, i: jax.lax.dynamic_index_in_dim(r, i, 0, keepdims=False))(x, idx)


def accept_drafts(p: Array, q: Array, drafts: Array, key: Array) -> tuple[Array, Array]:
    """Leviathan et al.'s rule for each row: p `[B, k+1, V]` (the target at the drafts' positions and one past),
    q `[B, k, V]` (what each draft was drawn from), drafts `[B, k]` -> (accepted lengths a `[B]`, the residual
    `normalize(max(0, p_i - q_i))` at every i `[B, k+1, V]`, the last one p_k itself)."""
    B, k = drafts.shape
    pd = jnp.take_along_axis(p[:, :k], drafts[..., None], -1)[..., 0]  # [B, k]
    qd = jnp.take_along_axis(q, drafts[..., None], -1)[..., 0]
    ok = jax.random.uniform(key, (B, k)) * qd < pd  # probability min(1, p / q)
    a = jnp.sum(jnp.cumprod(ok, axis=1), axis=1)  # [B]
    res = jnp.maximum(p - jnp.pad(q, ((0, 0), (0, 1), (0, 0))), 0.0)
    return a, jnp.where(jnp.sum(res, -1, keepdims=True) > 0, res, p)


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
    dup = (lambda x: jnp.concatenate([x, x])) if use_cfg else (lambda x: x)  # [B, ...] -> rows [cond; uncond]

    def probs(logits: Array, pos: Array) -> Array:
        """Model logits `[R, K, V]` at image positions `pos [B, K]` -> processed distributions `[B, K, V]`."""
        logits = proc.apply_rows(chain, logits, pos, T)
        return jax.nn.one_hot(jnp.argmax(logits, -1), V) if greedy else jax.nn.softmax(logits, -1)

    def propose(dcache, q0, n, key):
        """d_0 ~ q0 `[B, V]`, then feed d_{i-1} to get q_i and draw d_i (row b from position n_b): drafts `[B, k]`,
        q `[B, k, V]`."""
        keys = jax.random.split(key, k)
        d0 = _sample(q0, keys[0])

        def body(carry, inp):
            dcache, d = carry
            i, key = inp
            logits, dcache = drf.apply({"params": draft_params}, dup(d)[:, None], None, start=dup(C + n + i - 1),
                                       cache=dcache)
            q = probs(logits, (n + i)[:, None])[:, 0]
            d = _sample(q, key)
            return (dcache, d), (d, q)

        (dcache, _), (ds, qs) = jax.lax.scan(body, (dcache, d0), (jnp.arange(1, k), keys[1:]))
        drafts = jnp.concatenate([d0[:, None], ds.T], axis=1)
        return dcache, drafts, jnp.concatenate([q0[:, None], qs.transpose(1, 0, 2)], axis=1)

    def accept(p, q, drafts, n, key):
        """p `[B, k+1, V]`, q `[B, k, V]`, drafts `[B, k]` -> (m `[B]`, token n + m `[B]`): tokens n..n+m are kept."""
        ka, kr = jax.random.split(key)
        a, res = accept_drafts(p, q, drafts, ka)
        m = jnp.clip(jnp.minimum(a, T - 1 - n), 0)
        dm = at_rows(jnp.pad(drafts, ((0, 0), (0, 1))), m)
        return m, jnp.where(a > m, dm, _sample(at_rows(res, m), kr))

    def finish(n, m, tok, buf, stats):
        """Write each active row's token n + m, advance it to n + m + 1, count the round."""
        active = n < T
        buf = jnp.where(active[:, None], put_rows(buf, tok[:, None], n + m), buf)
        used = jnp.where(active, jnp.minimum(k, T - 1 - n), 0)
        stats = {"proposed": stats["proposed"] + used.sum(),
                 "accepted": stats["accepted"] + jnp.where(active, m, 0).sum(), "rounds": stats["rounds"] + 1,
                 "row_rounds": stats["row_rounds"] + active.sum()}
        return jnp.where(active, n + m + 1, n), buf, stats

    # Round 0: prefill the draft with the condition rows, prefill the target with condition rows + drafts.
    rng, kp, ka = jax.random.split(rng, 3)
    zeros = jnp.zeros(B, jnp.int32)
    dcache = init_cache(draft_cfg, R, C + T + k)  # the draft may run k - 1 tokens past the end
    dlogits, dcache = drf.apply({"params": draft_params}, None, rows, start=0, cache=dcache)
    dcache, drafts, q = propose(dcache, probs(dlogits[:, -1:], zeros[:, None])[:, 0], zeros, kp)
    tlogits, tcache = tgt.apply({"params": params}, dup(drafts), rows, start=0,
                                cache=init_cache(cfg, R, C + T))
    m, tok = accept(probs(tlogits[:, C - 1:], jnp.broadcast_to(jnp.arange(k + 1), (B, k + 1))), q, drafts, zeros, ka)
    buf = jnp.zeros((B, T + k), jnp.int32).at[:, :k].set(drafts)  # [B, T + k]: tokens, then drafts
    zero = jnp.int32(0)
    n, buf, stats = finish(zeros, m, tok, buf, {"proposed": zero, "accepted": zero, "rounds": zero, "row_rounds": zero})

    def round_(carry):
        n, buf, tcache, dcache, rng, stats = carry  # n [B]: tokens each row has kept
        rng, kp, ka = jax.random.split(rng, 3)
        # Draft: feed the last two kept tokens (the one before may be missing), read q for token n.
        ws = jnp.maximum(n - 2, 0)
        dl, dcache = drf.apply({"params": draft_params}, dup(take_rows(buf, ws, 2)), None, start=dup(C + ws),
                               cache=dcache)
        q0 = probs(take_rows(dl, dup(n - 1 - ws), 1), n[:, None])[:, 0]
        dcache, drafts, q = propose(dcache, q0, n, kp)
        buf = put_rows(buf, drafts, n)
        # Target: one call over [t_{n-1}, d_0..d_{k-1}], slid back so it ends by the last position.
        ts = jnp.minimum(n - 1, T - k - 1)
        tl, tcache = tgt.apply({"params": params}, dup(take_rows(buf, ts, k + 1)), None, start=dup(C + ts),
                               cache=tcache)
        tl = take_rows(jnp.pad(tl, ((0, 0), (0, k), (0, 0))), dup(n - 1 - ts), k + 1)
        m, tok = accept(probs(tl, n[:, None] + jnp.arange(k + 1)), q, drafts, n, ka)
        n, buf, stats = finish(n, m, tok, buf, stats)
        return n, buf, tcache, dcache, rng, stats

    n, buf, *_, stats = jax.lax.while_loop(lambda c: jnp.any(c[0] < T), round_,
                                           (n, buf, tcache, dcache, rng, stats))
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

    Returns the tokens and acceptance totals `{"proposed", "accepted", "rounds", "row_rounds"}` (int32 scalars): per
    round and unfinished row, `proposed` counts the drafts that could still be used (at most k, fewer at the end)
    and `accepted` those the row kept; `rounds` counts target calls (until the slowest row is done), `row_rounds`
    the rounds of every row until it was done (a row keeps `accepted + row_rounds` tokens over them). Sampling
    settings are those of `sampling.generate` (no repetition penalty) and apply to both models' distributions.
    """
    if isinstance(k, bool) or int(k) != k or not 1 <= k < cfg.seq_len:
        raise ValueError(f"k={k} must be an integer in [1, seq_len - 1 = {cfg.seq_len - 1}]: the target checks "
                         "k drafts plus the token before them in one window of the sequence.")
    check_draft(cfg, draft_cfg)
    chain = exact_chain(cfg, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
                        greedy=greedy, cfg_scale=cfg_scale)
    cond = conditions.check(cfg, cond)
    return _speculate(prepare(params), prepare(draft_params), cond, rng, chain, cfg=cfg,
                      draft_cfg=draft_cfg, k=int(k), greedy=bool(greedy))


def exact_chain(cfg: TransformerConfig, *, temperature: float, top_k: int, top_p: float, min_p: float,
                typical_p: float, greedy: bool, cfg_scale: Any) -> tuple:
    """The processors whose output distribution a draft-and-verify sampler reproduces exactly (checked first):
    guidance, then (unless greedy) the warpers."""
    SamplingParams(temperature, top_k, top_p, greedy, cfg_scale, min_p, typical_p).validate(cfg.vocab_size)
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
    return chain
