"""The GPU backend: XLA, with cuDNN's fused attention as a choice for training and prefill.

`attention="cudnn"` runs `jax.nn.dot_product_attention(implementation="cudnn")` (bfloat16 / float16 inputs,
`is_causal` rather than a mask matrix); one-position decode attention stays the reference einsum path (as MaxText
does). A mask beyond causality (padded prompts) goes through the reference attention.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ar_jax.backends.xla import Backend, reference_attention

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class GpuBackend(Backend):
    platform: str = "gpu"
    ATTENTION = ("xla", "cudnn")

    def attention(self, q: Array, k: Array, v: Array, *, causal: bool, mask: Array | None, scale: float) -> Array:
        if self.attention_impl == "cudnn" and mask is None:
            dt = q.dtype if q.dtype in (jnp.bfloat16, jnp.float16) else jnp.bfloat16
            out = jax.nn.dot_product_attention(q.astype(dt), k.astype(dt), v.astype(dt), scale=scale,
                                               is_causal=causal, implementation="cudnn")
            return out.astype(q.dtype)
        return reference_attention(q, k, v, causal=causal, mask=mask, scale=scale)
