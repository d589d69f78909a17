"""Medusa heads (Cai et al. 2024): K extra heads on the transformer's final hidden state, head i guessing the token
i + 1 places after the one the model's own head predicts.

Head i is Medusa-1's: a residual SiLU block and its own vocabulary projection, `logits_i = (h + silu(h W_i + b_i))
U_i`, with `W_i = 0` and `U_i` the trained output head at the start (so every head starts as the model's guess of the
next token). The heads read `Transformer(..., heads="hidden")`'s hidden state `[B, S, dim]`; the decoder itself is
unchanged and frozen when only the heads are trained (`ar_jax.training.medusa`). Decoding with them:
`ar_jax.decode.medusa`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ar_jax import axes
from ar_jax.models.transformer import TransformerConfig

Array = jax.Array


def init_heads(cfg: TransformerConfig, params: Any, num_heads: int) -> dict[str, Array]:
    """K = `num_heads` heads for the trained decoder `params`: `{"w": [K, dim, dim], "b": [K, dim], "output":
    [K, dim, vocab]}` (the residual blocks zero, every projection a copy of the decoder's output head)."""
    if isinstance(num_heads, bool) or int(num_heads) != num_heads or num_heads < 1:
        raise ValueError(f"num_heads={num_heads} must be a positive integer (Medusa used 4 or 5).")
    out = jnp.asarray(params["output"], jnp.float32)
    if out.shape != (cfg.dim, cfg.vocab_size):
        raise ValueError(f"the decoder's output head has shape {out.shape}, not [dim={cfg.dim}, vocab="
                         f"{cfg.vocab_size}]: pass the trained parameters, not prepared (re-laid-out) ones.")
    K, D = int(num_heads), cfg.dim
    return {"w": jnp.zeros((K, D, D), jnp.float32), "b": jnp.zeros((K, D), jnp.float32),
            "output": jnp.broadcast_to(out, (K, *out.shape)) + 0.0}


def logical_axes(heads: dict[str, Array]) -> dict[str, tuple]:
    """Logical axis names of the heads' parameters (the head axis unsharded)."""
    return {"w": (None, axes.EMBED, None), "b": (None, None), "output": (None, axes.EMBED, axes.VOCAB)}


def num_heads(heads: dict[str, Array]) -> int:
    return heads["w"].shape[0]


def head_logits(heads: dict[str, Array], hidden: Array) -> Array:
    """Every head's logits, float32: hidden `[..., dim]` -> `[..., K, vocab]`."""
    h = hidden.astype(jnp.float32)
    h = h[..., None, :] + jax.nn.silu(jnp.einsum("...d,kde->...ke", h, heads["w"]) + heads["b"])  # [..., K, dim]
    return jnp.einsum("...kd,kdv->...kv", h, heads["output"])
