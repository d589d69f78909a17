"""The TPU backend: XLA, with the Pallas splash-attention kernel as a choice for training and prefill.

`attention="splash"` runs `jax.experimental.pallas.ops.tpu.splash_attention` (causal or full masks, grouped-query
heads as one MQA kernel per key/value head, vmapped over the batch); one-position decode attention stays the
reference einsum path. `interpret=True` runs the same kernel through Pallas' interpreter, which is how the tests
check its numbers on a CPU. A mask beyond causality (padded prompts) goes through the reference attention.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ar_jax.backends.xla import Backend, reference_attention

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TpuBackend(Backend):
    platform: str = "tpu"
    interpret: bool = False  # run the Pallas kernel in interpret mode (any platform; tests)
    mesh: Any = None  # the training mesh: the kernel runs per device under shard_map (Mosaic calls are not partitioned)
    ATTENTION = ("xla", "splash")

    def attention(self, q: Array, k: Array, v: Array, *, causal: bool, mask: Array | None, scale: float) -> Array:
        if self.attention_impl == "splash" and mask is None and (causal or q.shape[1] % LANES == 0):
            run = functools.partial(splash_attention, causal=causal, scale=scale, interpret=self.interpret)
            if self.mesh is None or self.mesh.size == 1:
                return run(q, k, v)
            return _per_device(run, self.mesh, q, k, v)
        return reference_attention(q, k, v, causal=causal, mask=mask, scale=scale)


def _per_device(run: Any, mesh: Any, q: Array, k: Array, v: Array) -> Array:
    """`run(q, k, v)` under shard_map: the batch over the data axes, heads over "tensor" where it divides them."""
    from jax.sharding import PartitionSpec as P

    t = mesh.shape.get("tensor", 1)
    heads = "tensor" if q.shape[2] % t == 0 and k.shape[2] % t == 0 else None
    batch = tuple(a for a in ("data", "fsdp") if a in mesh.shape)
    qs, kvs = P(batch, None, heads, None), P(batch, None, heads, None)
    return jax.shard_map(run, mesh=mesh, in_specs=(qs, kvs, kvs), out_specs=qs, check_vma=False)(q, k, v)


LANES = 128  # the kernel's tiles are multiples of this many positions


def _block(n: int) -> int:
    """The largest of 512, 256, 128 dividing n (a multiple of 128): the kernel's tile."""
    return next(b for b in (512, 256, LANES) if n % b == 0)


@functools.lru_cache(maxsize=32)
def _kernel(seq: int, groups: int, causal: bool, interpret: bool):
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    one = sa.CausalMask((seq, seq)) if causal else sa.FullMask((seq, seq))
    b = _block(seq)
    sizes = sa.BlockSizes(block_q=b, block_kv=b, block_kv_compute=b, block_q_dkv=b, block_kv_dkv=b,
                          block_kv_dkv_compute=b, block_q_dq=b, block_kv_dq=b)
    with jax.ensure_compile_time_eval():  # built once, outside any trace
        kernel = sa.make_splash_mqa_single_device(sa.MultiHeadMask([one] * groups), block_sizes=sizes,
                                                  interpret=interpret)
    for name in ("fwd_mask_info", "dq_mask_info", "dkv_mask_info"):  # host arrays: constants of the traced kernel,
        info = getattr(kernel, name)  # not device arrays captured from outside it (which jax.export cannot take)
        setattr(kernel, name, None if info is None else jax.tree.map(np.asarray, info))
    return kernel


def splash_attention(q: Array, k: Array, v: Array, *, causal: bool, scale: float, interpret: bool = False) -> Array:
    """`q [B, S, H, D]`, `k, v [B, S, KV, D]` -> `[B, S, H, D]` by splash attention: each key/value head serves its
    `G = H // KV` query heads as one multi-query kernel call. A causal sequence is padded at its end to a multiple
    of 128 positions (no real query sees the padding); a full one must be such a multiple already."""
    S = q.shape[1]
    pad = -S % LANES
    if pad:
        if not causal:
            raise ValueError(f"splash attention without causality needs a multiple of {LANES} positions, got {S}.")
        widen = lambda x: jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0)))
        return splash_attention(widen(q), widen(k), widen(v), causal=True, scale=scale, interpret=interpret)[:, :S]
    B, _, H, D = q.shape
    KV = k.shape[2]
    kernel = _kernel(S, H // KV, causal, interpret)
    qh = (q * scale).reshape(B, S, KV, H // KV, D).transpose(0, 2, 3, 1, 4)  # [B, KV, G, S, D]
    kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, KV, S, D]
    out = jax.vmap(jax.vmap(kernel))(qh, kh, vh)  # [B, KV, G, S, D]
    return out.transpose(0, 3, 1, 2, 4).reshape(B, S, H, D).astype(q.dtype)
