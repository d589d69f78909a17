"""The token cross-entropy every model family trains on, with a hand-written gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


@jax.custom_vjp
def token_nll(logits: Array, tokens: Array) -> Array:
    """`-log softmax(logits)[token]` in nats, float32: logits `[..., V]`, tokens `[...]` int -> `[...]`.

    The value and gradient of `-take_along_axis(log_softmax(logits), tokens)`, in fewer passes over the logits
    (for GPT-B's training step `[8, 256, 16384]`, 134 MB): the forward pass is a max and a sum of exponentials
    (no log-probabilities written), the backward pass one elementwise `(softmax - onehot) * g` (no scatter of `g`
    into zeros, no second softmax); `benchmarks/train_step_ab.py` measures what it is worth.
    """
    return _nll_fwd(logits, tokens)[0]


def _nll_fwd(logits: Array, tokens: Array) -> tuple[Array, tuple[Array, Array, Array]]:
    x = logits.astype(jnp.float32)
    m = jax.lax.stop_gradient(x.max(-1, keepdims=True))
    lse = jnp.log(jnp.exp(x - m).sum(-1)) + m[..., 0]
    picked = jnp.take_along_axis(x, tokens[..., None], axis=-1)[..., 0]
    return lse - picked, (logits, lse, tokens)


def _nll_bwd(res: tuple[Array, Array, Array], g: Array) -> tuple[Array, None]:
    logits, lse, tokens = res
    onehot = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1) == tokens[..., None]
    d = (jnp.exp(logits.astype(jnp.float32) - lse[..., None]) - onehot) * g[..., None]
    return d.astype(logits.dtype), None


token_nll.defvjp(_nll_fwd, _nll_bwd)
