"""Medusa heads (Cai et al. 2024): K extra heads on the transformer's final hidden state, head i guessing the token
i places after the one the model's own head predicts; sequential ones (Hydra, Ankner et al. 2024) also read the token
just before the one they guess.

Head i is Medusa-1's made wider: a residual SiLU block and its own vocabulary projection, `logits_i = (z + silu(z W_i
+ b_i) V_i) U_i` (`W_i [dim, width]`) with `z = h`, `V_i = 0` and `U_i` the trained output head at the start (so every
head starts as the model's guess of the next token). A sequential head adds a learned embedding of the token before its
own, `z = h + sqrt(dim) E_i[prev]` (`E_i` zero at the start; scaled so that it reaches the hidden state's size at
the optimizer's step size): when decoding, the token the model has just sampled for head 1 and the previous head's
proposal after it, which tells an image head most of what its stale hidden state lacks. The heads read
`Transformer(..., heads="hidden")`'s hidden state `[B, S, dim]`; the decoder itself is unchanged and frozen when only
the heads are trained (`ar_jax.training.medusa`). Decoding with them: `ar_jax.decode.medusa`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ar_jax import axes
from ar_jax.models.transformer import TransformerConfig

Array = jax.Array


def init_heads(cfg: TransformerConfig, params: Any, num_heads: int, sequential: bool = True, width: int = 0,
               rng: Array | None = None) -> dict[str, Array]:
    """K = `num_heads` heads for the trained decoder `params`: `{"w": [K, dim, width], "b": [K, width], "v": [K, width,
    dim], "output": [K, dim, vocab]}` (`width` 0: dim; `w` random from `rng`, `v` zero, every projection a copy of the
    decoder's output head), and for `sequential` heads `"embed": [K, vocab, dim]` (zero)."""
    if isinstance(num_heads, bool) or int(num_heads) != num_heads or num_heads < 1:
        raise ValueError(f"num_heads={num_heads} must be a positive integer (Medusa used 4 or 5).")
    out = jnp.asarray(params["output"], jnp.float32)
    if out.shape != (cfg.dim, cfg.vocab_size):
        raise ValueError(f"the decoder's output head has shape {out.shape}, not [dim={cfg.dim}, vocab="
                         f"{cfg.vocab_size}]: pass the trained parameters, not prepared (re-laid-out) ones.")
    K, D, W = int(num_heads), cfg.dim, int(width) or cfg.dim
    w = jax.random.normal(jax.random.key(0) if rng is None else rng, (K, D, W)) / jnp.sqrt(D)
    heads = {"w": w, "b": jnp.zeros((K, W), jnp.float32), "v": jnp.zeros((K, W, D), jnp.float32),
             "output": jnp.broadcast_to(out, (K, *out.shape)) + 0.0}
    if sequential:
        heads["embed"] = jnp.zeros((K, cfg.vocab_size, D), jnp.float32)
    return heads


def logical_axes(heads: dict[str, Array]) -> dict[str, tuple]:
    """Logical axis names of the heads' parameters (the head axis unsharded)."""
    names = {"w": (None, axes.EMBED, axes.MLP), "b": (None, axes.MLP), "v": (None, axes.MLP, axes.EMBED),
             "output": (None, axes.EMBED, axes.VOCAB),
             "embed": (None, axes.VOCAB, axes.EMBED)}
    return {k: names[k] for k in heads}


def num_heads(heads: dict[str, Array]) -> int:
    return heads["w"].shape[0]


def head_logits(heads: dict[str, Array], hidden: Array, prev: Array | None = None) -> Array:
    """Every head's logits, float32: hidden `[..., dim]`, prev `[..., K]` (the token before each head's, read by
    sequential heads; None for Medusa's) -> `[..., K, vocab]`."""
    K = num_heads(heads)
    z = jnp.broadcast_to(hidden.astype(jnp.float32)[..., None, :], (*hidden.shape[:-1], K, hidden.shape[-1]))
    if "embed" in heads:
        z = z + heads["embed"][jnp.arange(K), prev] * z.shape[-1] ** 0.5  # [..., K, dim]
    a = jax.nn.silu(jnp.einsum("...kd,kdw->...kw", z, heads["w"]) + heads["b"])  # [..., K, width]
    z = z + jnp.einsum("...kw,kwd->...kd", a, heads["v"])
    return jnp.einsum("...kd,kdv->...kv", z, heads["output"])


def head_step(heads: dict[str, Array], i: int, hidden: Array, prev: Array) -> Array:
    """Head i's logits alone (decoding proposes one head after another): hidden `[B, dim]`, prev `[B]` -> `[B, V]`."""
    one = {k: v[i:i + 1] for k, v in heads.items()}
    return head_logits(one, hidden, prev[:, None])[:, 0]
