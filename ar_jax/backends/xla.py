"""The reference backend: every platform-dependent operation written in plain XLA (jnp / lax / jax.nn).

Every other backend (`cpu`, `gpu`, `tpu`) subclasses `Backend` and overrides some of its methods; the tests check
each override against these. A backend is a frozen dataclass: hashable, passed to the models as a static part of
their definition, so choosing another one is a new compilation, never stale state read at trace time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

Array = jax.Array
WRITTEN_BLOCK = 64  # one-position decoding over a longer cache reads it in blocks of this many, up to the last written
CACHED_QUERY_MAX = 8  # calls on a cache with at most this many new positions use `cached_attention`


@flax.struct.dataclass
class Prepared:
    """Weights as a backend's decoding reads them (`Backend.prepare`), with that backend as static data, so a jitted
    sampler handed a `Prepared` needs no conversion and compiles once per backend."""

    params: Any
    backend: Backend = flax.struct.field(pytree_node=False)


@dataclasses.dataclass(frozen=True)
class Backend:
    """Plain XLA: the reference implementation, and what runs where no other backend applies."""

    platform: str = "any"  # the device platform this backend was chosen for ("cpu", "gpu", "tpu", or "any")
    attention_impl: str = "xla"  # training/prefill attention: "xla" here; subclasses add "cudnn", "splash"

    ATTENTION = ("xla",)  # attention implementations this backend offers

    def replace(self, **kw: Any) -> Backend:
        return dataclasses.replace(self, **kw)

    # Dense projections -------------------------------------------------------------------------------------------

    def weight_spec(self, shape: tuple[int, ...], names: tuple, n_in: int) -> tuple[tuple[int, ...], tuple]:
        """Stored shape and logical axis names of a projection weight `[*in, *out]` (the decode layouts change them)."""
        return shape, names

    def dense(self, x: Array, w: Array, n_in: int, out: tuple[int, ...], out_dtype: Any = None) -> Array:
        """`x [..., *in] @ w [*in, *out]` -> `[..., *out]` (w as `weight_spec` stores it)."""
        lead = x.shape[:x.ndim - n_in]
        k = math.prod(x.shape[x.ndim - n_in:])
        y = jnp.dot(x.reshape(-1, k), w.reshape(k, -1), preferred_element_type=out_dtype or x.dtype)
        return y.reshape(*lead, *out)

    def prepare(self, params: Any, dense: Mapping[str, int]) -> Prepared:
        """`params` as decoding reads them fastest here; `dense` maps projection weight names to their input dims."""
        return Prepared(params, self)

    # Attention ---------------------------------------------------------------------------------------------------

    def attention(self, q: Array, k: Array, v: Array, *, causal: bool, mask: Array | None, scale: float) -> Array:
        """Attention without a cache (training, evaluation): `q [B, S, H, D]`, `k, v [B, S, KV, D]`; `mask`
        `[B|1, 1, S, S]` (True = attend) is extra to causality (e.g. prompt padding) or None."""
        return reference_attention(q, k, v, causal=causal, mask=mask, scale=scale)

    def cached_attention(self, q: Array, k: Array, v: Array, *, start: Array | int, causal: bool,
                         mask: Array, lengths_only: bool, scale: float) -> Array:
        """Attention of new positions `q [B, S, H, D]` over the cache `k, v [B, KV, M, D]` (written up to
        `start + S`; `start` one scalar or one per row `[B]`); `mask [B|1, 1, S, M]` is the full mask. `lengths_only`
        (static): the mask is exactly "key position <= query position", so one causal position may read just the
        first `start + 1` entries."""
        dt = q.dtype
        if lengths_only and causal and q.shape[1] == 1 and k.shape[2] % WRITTEN_BLOCK == 0 \
                and k.shape[2] >= 2 * WRITTEN_BLOCK:
            return written_attention(q, k, v, start + 1, scale, WRITTEN_BLOCK)
        if q.shape[1] <= CACHED_QUERY_MAX:
            return einsum_attention(q, k.astype(dt), v.astype(dt), mask, scale)
        kt, vt = k.transpose(0, 2, 1, 3).astype(dt), v.transpose(0, 2, 1, 3).astype(dt)
        return jax.nn.dot_product_attention(q, kt, vt, mask=mask, scale=scale)

    # Convolutions ------------------------------------------------------------------------------------------------

    def conv3x3(self, x: Array, kernel: Array, bias: Array) -> Array:
        """'Same' 3x3 stride-1 correlation plus bias: `x [B, H, W, C_in]`, `kernel [3, 3, C_in, C_out]` (HWIO)."""
        return conv3x3_direct(x, kernel, bias)

    # Compilation -------------------------------------------------------------------------------------------------

    def compile_options(self, kind: str) -> dict[str, Any] | None:
        """XLA compiler options for a function of `kind` ("conv": convolution-heavy; "decode"; "train"), or None."""
        return None

    def check(self) -> None:
        """Raise ValueError naming the attention choice, the platform and the alternatives, before any compilation."""
        if self.attention_impl not in self.ATTENTION:
            every = {"xla": "any platform", "cudnn": "GPU", "splash": "TPU"}
            raise ValueError(
                f"attention={self.attention_impl!r} cannot run on platform {self.platform!r}; here choose one of "
                f"{list(self.ATTENTION)} ({', '.join(f'{a!r}: {p}' for a, p in every.items())}).")


def reference_attention(q: Array, k: Array, v: Array, *, causal: bool, mask: Array | None, scale: float) -> Array:
    """`jax.nn.dot_product_attention` with the causal mask made explicit (grouped-query heads broadcast)."""
    S = q.shape[1]
    full = jnp.tril(jnp.ones((S, S), bool))[None, None] if causal else None
    if mask is not None:
        full = mask if full is None else full & mask
    return jax.nn.dot_product_attention(q, k, v, mask=full, scale=scale)


def einsum_attention(q: Array, k: Array, v: Array, mask: Array, scale: float) -> Array:
    """Attention of new positions `q [B, S, H, D]` over the cache `k, v [B, KV, M, D]` (mask `[B|1, 1, S, M]`).

    The cache is heads-major, so both contractions are batched over (B, KV) as stored: no transposed copy of
    the cache each step, which `jax.nn.dot_product_attention` over `[B, M, KV, D]` made on XLA:CPU.
    """
    B, S, H, D = q.shape
    KV = k.shape[1]
    G = H // KV
    qg = q.reshape(B, S, KV, G, D).transpose(0, 2, 1, 3, 4).reshape(B, KV, S * G, D)
    s = jnp.einsum("bkqd,bkmd->bkqm", qg, k, preferred_element_type=jnp.float32) * scale
    m = jnp.repeat(mask[:, 0], G, axis=1)[:, None]  # [B|1, 1, S * G, M]
    s = jnp.where(m, s, -jnp.inf)
    p = jax.nn.softmax(s, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkqm,bkmd->bkqd", p, v, preferred_element_type=jnp.float32)  # [B, KV, S * G, D]
    return out.reshape(B, KV, S, G, D).transpose(0, 2, 1, 3, 4).reshape(B, S, H, D).astype(q.dtype)


def written_attention(q: Array, k: Array, v: Array, length: Array, scale: float, block: int = WRITTEN_BLOCK) -> Array:
    """Attention of one new position `q [B, 1, H, D]` over the first `length` (scalar, or per row `[B]`) cache entries
    of `k, v [B, KV, M, D]`.

    Reads only the blocks holding written entries (a loop with a traced trip count, online softmax across blocks),
    where `einsum_attention` reads all M: half the cache on average over a generation. Same result.
    """
    B, _, H, D = q.shape
    KV = k.shape[1]
    G = H // KV
    qg = q.reshape(B, KV, G, D)
    length_ = length if jnp.ndim(length) == 0 else length[:, None, None, None]  # against [B, KV, G, block]
    length = jnp.max(length)

    def body(i, carry):
        m, total, acc = carry
        kb = jax.lax.dynamic_slice_in_dim(k, i * block, block, axis=2).astype(q.dtype)
        vb = jax.lax.dynamic_slice_in_dim(v, i * block, block, axis=2).astype(q.dtype)
        s = jnp.einsum("bkgd,bkmd->bkgm", qg, kb, preferred_element_type=jnp.float32) * scale
        s = jnp.where(i * block + jnp.arange(block) < length_, s, -jnp.inf)
        m_new = jnp.maximum(m, s.max(-1))
        p = jnp.exp(s - m_new[..., None])
        c = jnp.exp(m - m_new)
        acc = acc * c[..., None] + jnp.einsum("bkgm,bkmd->bkgd", p.astype(vb.dtype), vb,
                                              preferred_element_type=jnp.float32)
        return m_new, total * c + p.sum(-1), acc

    init = (jnp.full((B, KV, G), -jnp.inf, jnp.float32), jnp.zeros((B, KV, G), jnp.float32),
            jnp.zeros((B, KV, G, D), jnp.float32))
    _, total, acc = jax.lax.fori_loop(0, (length + block - 1) // block, body, init)
    return (acc / total[..., None]).reshape(B, 1, H, D).astype(q.dtype)


def conv3x3_direct(x: Array, kernel: Array, bias: Array) -> Array:
    """`lax.conv` with padding 1: `x [B, H, W, C_in]`, `kernel [3, 3, C_in, C_out]` (HWIO) -> `[B, H, W, C_out]`."""
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias.astype(y.dtype)
