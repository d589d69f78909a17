"""The CPU backend: what XLA:CPU needs to run the models near the hardware's limits, all behind `Backend`'s methods.

- Dense projections: training's weight gradients multiply a copy `x.T` (`cpu_dense`: XLA:CPU folds the transpose
  into the product otherwise, a form YNNPACK does not take); decoding's few rows read weights in panels of 16
  outputs through a native kernel (`kernels.rows_gemv`), or without the kernels one product per row over `[out, in]`
  copies. Which one is the backend's `layout` (static), made once by `prepare`, outside any jit.
- Attention: causal attention over more than `ATTENTION_BLOCK` positions in query blocks (`blockwise_causal_attention`);
  one decoding position over the written part of the cache through a native kernel (`kernels.decode_attention`).
- The VQ model's 3x3 convolutions by Winograd's F(4x4, 3x3) (`winograd.conv3x3`), compiled with Eigen rather than
  YNNPACK (`compile_options`).
The measurements behind each choice are in `docs/performance.md`. `native` is whether the kernels are built and the
arrays live on one device (an FFI call is not partitioned across devices); without them every method falls back to
an XLA formulation, so results never depend on them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ar_jax.backends.cpu import compile_options, kernels, winograd
from ar_jax.backends.xla import Backend, Prepared

Array = jax.Array
ATTENTION_BLOCK = 128  # causal attention without a cache over more positions than this runs in query blocks
ROW_GEMV_MAX = 4  # `[in, out]` products with at most this many rows run as one product per row
OUT_IN_ROW_GEMV_MAX = 2  # the same for `[out, in]` weights (batch 1 with CFG)
LAYOUTS = ("in_out", "out_in", "panels")  # trained; `[*out, *in]` copies; native-kernel panels `[ceil(O/16), I, 16]`


def native_available() -> bool:
    """Whether the native kernels are on (`AR_JAX_NATIVE_KERNELS`, x86-64, built): read once, when a backend is
    chosen."""
    return kernels.available()


@dataclasses.dataclass(frozen=True)
class CpuBackend(Backend):
    """XLA:CPU with the choices above. `layout` is how projection weights are stored ("in_out" as trained)."""

    platform: str = "cpu"
    native: bool = False  # the native kernels (built, and the arrays on one device)
    layout: str = "in_out"

    def weight_spec(self, shape: tuple[int, ...], names: tuple, n_in: int) -> tuple[tuple[int, ...], tuple]:
        if self.layout == "out_in":
            return shape[n_in:] + shape[:n_in], names[n_in:] + names[:n_in]
        if self.layout == "panels":  # one device: nothing to shard
            return (-(-math.prod(shape[n_in:]) // kernels.PANEL), math.prod(shape[:n_in]), kernels.PANEL), \
                (None, None, None)
        return shape, names

    def dense(self, x: Array, w: Array, n_in: int, out: tuple[int, ...], out_dtype: Any = None) -> Array:
        lead = x.shape[:x.ndim - n_in]
        rows, k = math.prod(lead), math.prod(x.shape[x.ndim - n_in:])
        x2 = x.reshape(rows, k)
        pet = out_dtype or x.dtype
        if self.layout == "panels":
            n_out = math.prod(out)
            if self.native and kernels.usable(w, x2):
                y = kernels.rows_gemv(w, x2, n_out).astype(pet)  # one pass over the weight for every 16 rows
            else:
                y = jnp.dot(x2, kernels.from_panels(w, n_out).T, preferred_element_type=pet)
        elif self.layout == "out_in":
            w2 = w.reshape(-1, k)
            if 1 < rows <= OUT_IN_ROW_GEMV_MAX:
                y = jnp.stack([jnp.dot(w2, x2[r], preferred_element_type=pet) for r in range(rows)])
            else:
                y = jnp.dot(w2, x2.T, preferred_element_type=pet).T
        else:
            w2 = w.reshape(k, -1)
            if 1 < rows <= ROW_GEMV_MAX:
                y = jnp.stack([jnp.dot(x2[r], w2, preferred_element_type=pet) for r in range(rows)])
            else:
                y = cpu_dense(x2, w2, jnp.dtype(pet))
        return y.reshape(*lead, *out)

    def prepare(self, params: Any, dense: Mapping[str, int]) -> Prepared:
        """Projection weights in panels for the native kernel (or `[out, in]` copies without it), once."""
        if self.layout != "in_out":
            return Prepared(params, self)
        layout = "panels" if self.native else "out_in"
        return Prepared(_relayout(params, tuple(sorted(dense.items())), layout), self.replace(layout=layout))

    def attention(self, q: Array, k: Array, v: Array, *, causal: bool, mask: Array | None, scale: float) -> Array:
        if causal and mask is None and q.shape[1] > ATTENTION_BLOCK:
            return blockwise_causal_attention(q, k, v, scale, ATTENTION_BLOCK)
        return super().attention(q, k, v, causal=causal, mask=mask, scale=scale)

    def cached_attention(self, q: Array, k: Array, v: Array, *, start: Array | int, causal: bool,
                         mask: Array, lengths_only: bool, scale: float) -> Array:
        B, S, H, D = q.shape
        KV = k.shape[1]
        if self.native and lengths_only and causal and S == 1 and jnp.ndim(start) == 0 \
                and kernels.attention_usable(qg := q.reshape(B, KV, H // KV, D), k, v):
            return kernels.decode_attention(qg, k, v, start + 1, scale).reshape(q.shape).astype(q.dtype)
        return super().cached_attention(q, k, v, start=start, causal=causal, mask=mask, lengths_only=lengths_only,
                                        scale=scale)

    def conv3x3(self, x: Array, kernel: Array, bias: Array) -> Array:
        if self.native and winograd.applies(x, kernel):
            return winograd.conv3x3(x, kernel, bias)
        return super().conv3x3(x, kernel, bias)

    def compile_options(self, kind: str) -> dict[str, Any] | None:
        return dict(compile_options.EIGEN_CPU) if kind == "conv" else None


@functools.partial(jax.jit, static_argnames=("dense", "layout"))
def _relayout(params: Any, dense: tuple[tuple[str, int], ...], layout: str) -> Any:
    """Every projection weight `[*in, *out]` (named in `dense`, with its input dims) moved to `layout`."""
    n_ins = dict(dense)

    def move(path, w):
        n_in = n_ins.get(getattr(path[-1], "key", None))
        if n_in is None:
            return w
        if layout == "panels":
            return kernels.to_panels(w.reshape(math.prod(w.shape[:n_in]), -1).T)
        return jnp.moveaxis(w, tuple(range(n_in)), tuple(range(w.ndim - n_in, w.ndim)))
    return jax.tree_util.tree_map_with_path(move, params)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def cpu_dense(x: Array, w: Array, out_dtype: Any) -> Array:
    """`x [T, K] @ w [K, N]` -> `[T, N]`, whose weight gradient multiplies a copy `x.T [K, T]` by `dy [T, N]`.

    Left to autodiff, XLA:CPU folds the transpose into the product (both operands contracted along their first
    dimension), a form YNNPACK does not take, and Eigen runs it up to half as fast. The copy is made in the forward
    pass and kept instead of `x`. Gradients are those of `jnp.dot(x, w, preferred_element_type=out_dtype)`.
    """
    return jnp.dot(x, w, preferred_element_type=out_dtype)


def _cpu_dense_fwd(x: Array, w: Array, out_dtype: Any) -> tuple[Array, tuple[Array, Array]]:
    return cpu_dense(x, w, out_dtype), (jax.lax.optimization_barrier(x.T), w)  # a copy, not folded into a product


def _cpu_dense_bwd(out_dtype: Any, res: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
    xt, w = res  # [K, T], [K, N]
    dx = jax.lax.dot_general(g, w, (((1,), (1,)), ((), ())), preferred_element_type=out_dtype)
    dw = jax.lax.dot_general(xt, g, (((1,), (0,)), ((), ())), preferred_element_type=out_dtype)
    return dx.astype(xt.dtype), dw.astype(w.dtype)


cpu_dense.defvjp(_cpu_dense_fwd, _cpu_dense_bwd)


def blockwise_causal_attention(q: Array, k: Array, v: Array, scale: float, block: int = ATTENTION_BLOCK) -> Array:
    """Causal attention of `q [B, S, H, D]` over `k, v [B, S, KV, D]`, one query block at a time, heads-major.

    Block i reads only keys `[0, end_i)`: the scores never hold `[B, H, S, S]` and most of the masked upper
    triangle is never computed (75% of the work of full attention at 2 blocks, 52% at 24). q, k and v are moved
    to heads-major `[B, KV, (G,) S, D]` once, so every block's two products are batched over (B, KV, G) as stored.
    Same result as `jax.nn.dot_product_attention` with a causal mask (scores and softmax in float32).
    """
    B, S, H, D = q.shape
    KV = k.shape[2]
    qh = q.reshape(B, S, KV, H // KV, D).transpose(0, 2, 3, 1, 4)  # [B, KV, G, S, D]
    kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, KV, S, D]
    outs = []
    for start in range(0, S, block):
        end = min(start + block, S)
        s = jnp.einsum("bkgqd,bkmd->bkgqm", qh[:, :, :, start:end], kh[:, :, :end],
                       preferred_element_type=jnp.float32) * scale
        s = jnp.where(jnp.arange(end)[None, :] <= jnp.arange(start, end)[:, None], s, -jnp.inf)
        p = jax.nn.softmax(s, axis=-1).astype(v.dtype)
        outs.append(jnp.einsum("bkgqm,bkmd->bkgqd", p, vh[:, :, :end]))
    out = jnp.concatenate(outs, axis=3)  # [B, KV, G, S, D]
    return out.transpose(0, 3, 1, 2, 4).reshape(B, S, H, D).astype(q.dtype)
