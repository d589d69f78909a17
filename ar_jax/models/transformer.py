"""The one decoder: class-conditional, LlamaGen-shaped, causal (AR) or bidirectional (MaskGIT).

Sequence layout (LlamaGen's): `[cls_0 .. cls_{C-1}, tok_0, tok_1, ...]`; the output at sequence
position `C - 1 + j` predicts image token `j`. Pre-norm RMSNorm blocks, SwiGLU, grouped-query
attention with interleaved rotary embeddings (1-D or LlamaGen's 2-D grid form, class rows zero).
The KV cache is data: `{"k", "v"}`, each a tuple of one array `[B, kv_heads, max_len, head_dim]` per layer,
passed in and returned; a call writes its keys/values at `start` with `lax.dynamic_update_slice`. One array
per layer, not one stacked `[layers, ...]` array: XLA:CPU updates a layer's array in place, while reading a layer
out of a stacked array it had just updated copied the whole cache, every layer of every step. Heads-major, so
decoding attention reads it without a transposed copy (`cached_attention`); a one-position step reads only the
entries written so far: on CPU through the native kernel (`ar_jax.kernels`), elsewhere over a cache of whole
WRITTEN_BLOCKs by blocks (`written_attention`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ar_jax import axes, kernels
from ar_jax.models import losses

Array = jax.Array
Cache = dict[str, tuple[Array, ...]]
CACHED_QUERY_MAX = 8  # calls on a cache with at most this many new positions use `cached_attention`
WRITTEN_BLOCK = 64  # one-position decoding over a longer cache reads it in blocks of this many, up to the last written
ATTENTION_BLOCK = 128  # causal attention without a cache over more positions than this runs in query blocks
# Projection weight layouts: "in_out" `[*in, *out]` (training, every backend); the CPU decode variants (`project`):
# "out_in" `[*out, *in]` (`to_out_in`) and "panels" `[ceil(O/16), I, 16]` for the native kernel (`to_panels`).
LAYOUTS = ("in_out", "out_in", "panels")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of the decoder; eval/decode variants by `.replace(...)`."""

    vocab_size: int  # image-token vocabulary (plus a [MASK] id for MaskGIT, if any)
    seq_len: int  # image tokens per sample (LlamaGen's block_size)
    num_classes: int  # class labels 0..num_classes-1; 0 means unconditional
    dim: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None  # None: = num_heads (no grouping)
    mlp_dim: int | None = None  # None: LlamaGen's rule from multiple_of / ffn_dim_multiplier
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    rope: str = "2d"  # "2d" (LlamaGen, needs a square seq_len) or "1d"
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    cls_token_num: int = 1  # class tokens before the image tokens
    null_class: bool = True  # an extra class row (id num_classes) for CFG / label dropout
    token_dropout: float = 0.0
    resid_dropout: float = 0.0
    ffn_dropout: float = 0.0
    attn_dropout: float = 0.0
    causal: bool = True  # False: bidirectional (MaskGIT)
    dtype: str = "float32"  # compute dtype; parameters stay float32, logits are float32
    weight_layout: str = "in_out"  # projection weights as stored: "in_out", or a CPU decode variant (`LAYOUTS`)

    def replace(self, **kw: Any) -> TransformerConfig:
        return dataclasses.replace(self, **kw)

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def hidden_dim(self) -> int:
        if self.mlp_dim:
            return self.mlp_dim
        h = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            h = int(self.ffn_dim_multiplier * h)
        return -(-h // self.multiple_of) * self.multiple_of

    @property
    def class_rows(self) -> int:
        return self.num_classes + int(self.null_class)

    @property
    def null_label(self) -> int:
        """The label id of the unconditional ("null") class."""
        return self.num_classes

    @property
    def max_len(self) -> int:
        """Longest sequence the model sees: class tokens + all image tokens."""
        return self.cls_token_num + self.seq_len

    # The model-family protocol (shared with other families, e.g. PixelCNN): what training, evaluation and
    # pipelines call, so that they never branch on the model class.
    def init(self, rng: Array) -> tuple[Any, Any]:
        """`(params, logical_axes)`."""
        return init_params(self, rng)

    def logical_axes(self) -> Any:
        return param_logical_axes(self)

    def token_nll(self, params: Any, tokens: Array, labels: Array, rng: Array | None = None) -> Array:
        """Teacher-forced NLL in nats of each image token `[B, T]` (dropout on when rng is given)."""
        logits, _ = Transformer(self).apply({"params": params}, tokens[:, :-1], labels, deterministic=rng is None,
                                            rngs=None if rng is None else {"dropout": rng})
        return losses.token_nll(logits[:, self.cls_token_num - 1:], tokens)  # position C-1+j predicts token j

    def generate(self, params: Any, labels: Any, rng: Array, **settings: Any) -> Array:
        """Sampled tokens `[B, seq_len]` (see `ar_jax.sampling.generate` for the settings)."""
        from ar_jax.sampling import generate

        return generate(params, self, labels, rng, **settings)

    def decoding(self, params: Any) -> tuple[TransformerConfig, Any]:
        """`(cfg, params)` in the layout decoding reads fastest (`decode_layout`); convert once, sample many times."""
        return decode_layout(self, params)

    def validate(self) -> None:
        """Raise ValueError naming the bad field and the fix."""
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}; "
                             "choose dim a multiple of num_heads.")
        if self.num_heads % self.kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.kv_heads}; "
                             "choose num_kv_heads dividing num_heads.")
        if self.head_dim % 2 or (self.rope == "2d" and self.head_dim % 4):
            raise ValueError(f"head_dim={self.head_dim} must be a multiple of {4 if self.rope == '2d' else 2} "
                             f"for rope={self.rope!r}; change dim or num_heads.")
        if self.weight_layout not in LAYOUTS:
            raise ValueError(f"weight_layout={self.weight_layout!r} is not one of {LAYOUTS}; 'in_out' is the "
                             "trained layout, `cfg.decoding(params)` makes the others.")
        if self.rope not in ("1d", "2d"):
            raise ValueError(f"rope={self.rope!r} is not one of '1d', '2d'.")
        if self.rope == "2d" and math.isqrt(self.seq_len) ** 2 != self.seq_len:
            raise ValueError(f"rope='2d' needs a square token grid but seq_len={self.seq_len}; "
                             "use rope='1d' or a square number of tokens.")
        if self.num_classes == 0 and not self.null_class:
            raise ValueError("an unconditional model (num_classes=0) needs null_class=True for its start token.")
        if self.cls_token_num < 1:
            raise ValueError(f"cls_token_num={self.cls_token_num} must be at least 1.")
        if self.attn_dropout:
            raise ValueError(f"attn_dropout={self.attn_dropout} is not supported; set it to 0.0 "
                             "(LlamaGen's models use 0; use resid_dropout / ffn_dropout).")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype={self.dtype!r} must be 'float32', 'bfloat16' or 'float16'.")


def rope_table(cfg: TransformerConfig) -> Array:
    """Rotary angles `[max_len, head_dim // 2, 2]` (cos, sin); class-token rows are zero (LlamaGen)."""
    n = cfg.head_dim
    if cfg.rope == "2d":
        grid = math.isqrt(cfg.seq_len)
        half = n // 2
        freqs = 1.0 / (cfg.rope_base ** (jnp.arange(0, half, 2)[: half // 2].astype(jnp.float32) / half))
        f = jnp.outer(jnp.arange(grid, dtype=jnp.float32), freqs)  # [grid, n // 4]
        ang = jnp.concatenate([jnp.broadcast_to(f[:, None], (grid, grid, f.shape[1])),
                               jnp.broadcast_to(f[None, :], (grid, grid, f.shape[1]))], axis=-1)
        ang = ang.reshape(grid * grid, half)
    else:
        freqs = 1.0 / (cfg.rope_base ** (jnp.arange(0, n, 2)[: n // 2].astype(jnp.float32) / n))
        ang = jnp.outer(jnp.arange(cfg.seq_len, dtype=jnp.float32), freqs)
    table = jnp.stack([jnp.cos(ang), jnp.sin(ang)], axis=-1)
    return jnp.concatenate([jnp.zeros((cfg.cls_token_num, n // 2, 2), jnp.float32), table])


def apply_rope(x: Array, rope: Array) -> Array:
    """Rotate interleaved pairs `(x[2i], x[2i+1])`. x `[B, S, H, D]`, rope `[S, D//2, 2]`."""
    xs = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
    cos, sin = rope[None, :, None, :, 0], rope[None, :, None, :, 1]
    out = jnp.stack([xs[..., 0] * cos - xs[..., 1] * sin, xs[..., 1] * cos + xs[..., 0] * sin], axis=-1)
    return out.reshape(x.shape).astype(x.dtype)


ROW_GEMV_MAX = 4  # on CPU, `[in, out]` products with at most this many rows run as one product per row
OUT_IN_ROW_GEMV_MAX = 2  # the same for `[out, in]` weights (batch 1 with CFG)


def project(x: Array, w: Array, n_in: int = 1, out_dtype: Any = None, layout: str = "in_out",
            out: tuple[int, ...] | None = None) -> Array:
    """`x [..., *in] @ w [*in, *out]` -> `[..., *out]`: a dense projection, `w` in `layout` (`LAYOUTS`).

    Decoding multiplies few rows (batch, or 2 x batch with CFG) by every weight, so it runs at memory speed at
    best, and on XLA:CPU the weights' layout matters. "panels" (what decoding uses on CPU with the native kernels;
    `out`, the output dims, is then needed) goes through `kernels.rows_gemv`, which reads each weight once for 16
    rows and sums in float32. "out_in" (without the kernels) makes each output one contiguous weight row, and
    2 rows of it (or 2-4 rows of "in_out") run one matrix-vector product per row, which beats the packed GEMM XLA
    picks otherwise (`benchmarks/few_row_products.py`).
    """
    lead = x.shape[:x.ndim - n_in]
    rows, k = math.prod(lead), math.prod(x.shape[x.ndim - n_in:])
    x2 = x.reshape(rows, k)
    pet = out_dtype or x.dtype
    if layout == "panels":
        if out is None:
            raise ValueError("project: layout='panels' needs `out`, the output dims the panels hold.")
        n_out = math.prod(out)
        if kernels.usable(w, x2):
            y = kernels.rows_gemv(w, x2, n_out).astype(pet)  # one pass over the weight for every 16 rows
        else:  # the kernels switched off after the layout was made: correct, not fast
            y = jnp.dot(x2, kernels.from_panels(w, n_out).T, preferred_element_type=pet)
    elif layout == "out_in":
        out = w.shape[:w.ndim - n_in]
        w2 = w.reshape(-1, k)
        if 1 < rows <= OUT_IN_ROW_GEMV_MAX and jax.default_backend() == "cpu":
            y = jnp.stack([jnp.dot(w2, x2[r], preferred_element_type=pet) for r in range(rows)])
        else:
            y = jnp.dot(w2, x2.T, preferred_element_type=pet).T
    else:
        out = w.shape[n_in:]
        w2 = w.reshape(k, -1)
        if 1 < rows <= ROW_GEMV_MAX and jax.default_backend() == "cpu":
            y = jnp.stack([jnp.dot(x2[r], w2, preferred_element_type=pet) for r in range(rows)])
        elif jax.default_backend() == "cpu":
            y = cpu_dense(x2, w2, jnp.dtype(pet))
        else:
            y = jnp.dot(x2, w2, preferred_element_type=pet)
    return y.reshape(*lead, *out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def cpu_dense(x: Array, w: Array, out_dtype: Any) -> Array:
    """`x [T, K] @ w [K, N]` -> `[T, N]` on CPU, whose weight gradient multiplies a copy `x.T [K, T]` by `dy [T, N]`.

    Left to autodiff, XLA:CPU folds the transpose into the product (both operands contracted along their first
    dimension), a form YNNPACK does not take, and Eigen runs it up to half as fast (`benchmarks/weight_gradients.py`:
    74.8 against 158.2 GFLOP/s for GPT-B's output weight). The copy is made in the forward pass and kept instead of
    `x`. Gradients are those of `jnp.dot(x, w, preferred_element_type=out_dtype)`.
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


def dense_param(module: nn.Module, cfg: TransformerConfig, name: str, shape: tuple, names: tuple, n_in: int = 1,
                init: Any = None) -> Array:
    """A projection weight `[*in, *out]` with logical axis `names`, or in `cfg.weight_layout`'s shape."""
    if cfg.weight_layout == "out_in":
        shape, names = shape[n_in:] + shape[:n_in], names[n_in:] + names[:n_in]
    elif cfg.weight_layout == "panels":  # a CPU decode layout, on one device: nothing to shard
        shape = (-(-math.prod(shape[n_in:]) // kernels.PANEL), math.prod(shape[:n_in]), kernels.PANEL)
        names = (None, None, None)
    return module.param(name, nn.with_logical_partitioning(init or _dense_init(), names), shape)


PROJECTIONS = {"wq": 1, "wk": 1, "wv": 1, "wo": 2, "w1": 1, "w3": 1, "w2": 1, "output": 1}  # weight: input dims


def to_out_in(params: Any) -> Any:
    """Transformer parameters with every projection weight moved to `[*out, *in]`, for
    `cfg.replace(weight_layout="out_in")`."""
    def move(path, w):
        n_in = PROJECTIONS.get(getattr(path[-1], "key", None))
        return w if n_in is None else jnp.moveaxis(w, tuple(range(n_in)), tuple(range(w.ndim - n_in, w.ndim)))
    return jax.tree_util.tree_map_with_path(move, params)


def to_panels(params: Any) -> Any:
    """Transformer parameters with every projection weight `[*in, *out]` in `kernels.to_panels`' layout
    `[ceil(O/16), I, 16]`, for `cfg.replace(weight_layout="panels")`."""
    def move(path, w):
        n_in = PROJECTIONS.get(getattr(path[-1], "key", None))
        return w if n_in is None else kernels.to_panels(w.reshape(math.prod(w.shape[:n_in]), -1).T)
    return jax.tree_util.tree_map_with_path(move, params)


_to_out_in_jit, _to_panels_jit = jax.jit(to_out_in), jax.jit(to_panels)


def decode_layout(cfg: TransformerConfig, params: Any) -> tuple[TransformerConfig, Any]:
    """`(cfg, params)` as decoding should use them: on XLA:CPU the "panels" weight layout for the native kernels,
    or "out_in" without them (see `project`); elsewhere as they are.

    Inside a jitted sampler the move is a copy of every weight on each call (about 1 s of GPT-B's generate_b1 in
    `benchmarks/speed.py`); called once outside, with its result passed to the samplers, it is paid once.
    """
    if jax.default_backend() != "cpu" or cfg.weight_layout != "in_out":
        return cfg, params
    if kernels.available():
        return cfg.replace(weight_layout="panels"), _to_panels_jit(params)
    return cfg.replace(weight_layout="out_in"), _to_out_in_jit(params)


class DecodingCache:
    """`cfg.decoding(params)` kept for the params object it was made from, remade when handed another one."""

    def __init__(self) -> None:
        self._made_from: Any = None
        self._made: tuple[TransformerConfig, Any] | None = None

    def get(self, cfg: TransformerConfig, params: Any) -> tuple[TransformerConfig, Any]:
        if self._made is None or self._made_from is not params:
            self._made_from, self._made = params, cfg.decoding(params)
        return self._made


def cached_attention(q: Array, k: Array, v: Array, mask: Array, scale: float) -> Array:
    """Attention of new positions `q [B, S, H, D]` over the cache `k, v [B, KV, M, D]` (mask `[S, M]`).

    The cache is heads-major, so both contractions are batched over (B, KV) as stored: no transposed copy of
    the cache each step, which `jax.nn.dot_product_attention` over `[B, M, KV, D]` made on XLA:CPU.
    """
    B, S, H, D = q.shape
    KV = k.shape[1]
    qg = q.reshape(B, S, KV, H // KV, D).transpose(0, 2, 1, 3, 4).reshape(B, KV, S * (H // KV), D)
    s = jnp.einsum("bkqd,bkmd->bkqm", qg, k, preferred_element_type=jnp.float32) * scale
    s = jnp.where(jnp.repeat(mask, H // KV, axis=0)[None, None], s, -jnp.inf)
    p = jax.nn.softmax(s, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkqm,bkmd->bkqd", p, v, preferred_element_type=jnp.float32)  # [B, KV, S * G, D]
    return out.reshape(B, KV, S, H // KV, D).transpose(0, 2, 1, 3, 4).reshape(B, S, H, D).astype(q.dtype)


def written_attention(q: Array, k: Array, v: Array, length: Array, scale: float, block: int = WRITTEN_BLOCK) -> Array:
    """Attention of one new position `q [B, 1, H, D]` over the first `length` cache entries of `k, v [B, KV, M, D]`.

    Reads only the blocks holding written entries (a loop with a traced trip count, online softmax across blocks),
    where `cached_attention` reads all M: half the cache on average over a generation. Same result.
    """
    B, _, H, D = q.shape
    KV = k.shape[1]
    G = H // KV
    qg = q.reshape(B, KV, G, D)

    def body(i, carry):
        m, total, acc = carry
        kb = jax.lax.dynamic_slice_in_dim(k, i * block, block, axis=2).astype(q.dtype)
        vb = jax.lax.dynamic_slice_in_dim(v, i * block, block, axis=2).astype(q.dtype)
        s = jnp.einsum("bkgd,bkmd->bkgm", qg, kb, preferred_element_type=jnp.float32) * scale
        s = jnp.where(i * block + jnp.arange(block) < length, s, -jnp.inf)
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


def blockwise_causal_attention(q: Array, k: Array, v: Array, scale: float, block: int = ATTENTION_BLOCK) -> Array:
    """Causal attention of `q [B, S, H, D]` over `k, v [B, S, KV, D]`, one query block at a time, heads-major.

    Block i reads only keys `[0, end_i)`: the scores never hold `[B, H, S, S]` and most of the masked upper
    triangle is never computed (75% of the work of full attention at 2 blocks, 52% at 24). q, k and v are moved
    to heads-major `[B, KV, (G,) S, D]` once, so every block's two products are batched over (B, KV, G) as stored;
    `jax.nn.dot_product_attention` transposed its operands around each product. Same result as it with a causal mask
    (scores and softmax in float32, probabilities cast to v's dtype).
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


def _dense_init(std: float = 0.02):
    return nn.initializers.normal(stddev=std)


class RMSNorm(nn.Module):
    eps: float
    dtype: Any

    @nn.compact
    def __call__(self, x: Array) -> Array:
        w = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, (axes.EMBED,)),
                       (x.shape[-1],))
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return (y * w).astype(self.dtype)


class Attention(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x: Array, rope: Array, mask: Array, cache: tuple[Array, Array] | None,
                 start: Array | int, deterministic: bool) -> tuple[Array, tuple[Array, Array] | None]:
        cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
        H, KV, D = cfg.num_heads, cfg.kv_heads, cfg.head_dim
        p = lambda name, shape, names, n_in=1: dense_param(self, cfg, name, shape, names, n_in).astype(dt)
        wq = p("wq", (cfg.dim, H, D), (axes.EMBED, axes.HEADS, axes.HEAD_DIM))
        wk = p("wk", (cfg.dim, KV, D), (axes.EMBED, axes.KV_HEADS, axes.HEAD_DIM))
        wv = p("wv", (cfg.dim, KV, D), (axes.EMBED, axes.KV_HEADS, axes.HEAD_DIM))
        wo = p("wo", (H, D, cfg.dim), (axes.HEADS, axes.HEAD_DIM, axes.EMBED), 2)
        proj = functools.partial(project, layout=cfg.weight_layout)
        q = apply_rope(proj(x, wq, out=(H, D)), rope)  # [B, S, H, D]
        k = apply_rope(proj(x, wk, out=(KV, D)), rope)  # [B, S, KV, D]
        v = proj(x, wv, out=(KV, D))
        if cache is not None:
            ck, cv = cache  # [B, KV, M, D]
            idx = (0, 0, start, 0)
            ck = jax.lax.dynamic_update_slice(ck, k.transpose(0, 2, 1, 3).astype(ck.dtype), idx)
            cv = jax.lax.dynamic_update_slice(cv, v.transpose(0, 2, 1, 3).astype(cv.dtype), idx)
            cache = (ck, cv)
        one = cache is not None and q.shape[1] == 1 and cfg.causal  # one decoding position, causal
        if one and kernels.attention_usable(qg := q.reshape(q.shape[0], KV, H // KV, D), ck, cv):
            out = kernels.decode_attention(qg, ck, cv, start + 1, D ** -0.5).reshape(q.shape).astype(q.dtype)
        elif one and ck.shape[2] % WRITTEN_BLOCK == 0 and ck.shape[2] >= 2 * WRITTEN_BLOCK:
            out = written_attention(q, ck, cv, start + 1, D ** -0.5, WRITTEN_BLOCK)  # casts only what it reads
        elif cache is not None and q.shape[1] <= CACHED_QUERY_MAX:
            out = cached_attention(q, ck.astype(dt), cv.astype(dt), mask[0, 0], D ** -0.5)
        elif cache is None and cfg.causal and q.shape[1] > ATTENTION_BLOCK:
            out = blockwise_causal_attention(q, k, v, D ** -0.5, ATTENTION_BLOCK)
        else:  # training, or a prefill longer than CACHED_QUERY_MAX
            if cache is not None:
                k, v = ck.transpose(0, 2, 1, 3).astype(dt), cv.transpose(0, 2, 1, 3).astype(dt)
            out = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=D ** -0.5)  # [B, S, H, D]
        out = proj(out, wo, n_in=2, out=(cfg.dim,))
        return nn.Dropout(cfg.resid_dropout)(out, deterministic=deterministic), cache


class FeedForward(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x: Array, deterministic: bool) -> Array:
        cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
        p = lambda name, shape, names: dense_param(self, cfg, name, shape, names).astype(dt)
        w1 = p("w1", (cfg.dim, cfg.hidden_dim), (axes.EMBED, axes.MLP))
        w3 = p("w3", (cfg.dim, cfg.hidden_dim), (axes.EMBED, axes.MLP))
        w2 = p("w2", (cfg.hidden_dim, cfg.dim), (axes.MLP, axes.EMBED))
        proj = functools.partial(project, layout=cfg.weight_layout)
        h = nn.silu(proj(x, w1, out=(cfg.hidden_dim,))) * proj(x, w3, out=(cfg.hidden_dim,))
        return nn.Dropout(cfg.ffn_dropout)(proj(h, w2, out=(cfg.dim,)), deterministic=deterministic)


class Block(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x, rope, mask, cache, start, deterministic):
        dt = jnp.dtype(self.cfg.dtype)
        h, cache = Attention(self.cfg, name="attention")(
            RMSNorm(self.cfg.norm_eps, dt, name="attention_norm")(x), rope, mask, cache, start, deterministic)
        x = x + h
        x = x + FeedForward(self.cfg, name="feed_forward")(
            RMSNorm(self.cfg.norm_eps, dt, name="ffn_norm")(x), deterministic)
        return x, cache


class Transformer(nn.Module):
    """Decoder over `[class tokens?, image tokens]`; returns logits `[B, S, V]` float32 and the cache."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, tokens: Array | None, labels: Array | None = None, *, start: Array | int = 0,
                 cache: Cache | None = None, deterministic: bool = True) -> tuple[Array, Cache | None]:
        """tokens `[B, S]` int (or None), labels `[B]` int (or None).

        With labels the class tokens are prepended, so the sequence is `[cls(C), tokens]`. `start` is the
        sequence position of the first element (0 when labels are given). With a cache, keys/values
        are written at `start` and attention reads the cache up to the written positions (whole, masked, or by
        blocks for one new position).
        """
        cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
        tok_table = self.param("tok_embeddings", nn.with_logical_partitioning(
            _dense_init(), (axes.VOCAB, axes.EMBED)), (cfg.vocab_size, cfg.dim))
        cls_table = self.param("cls_embedding", nn.with_logical_partitioning(
            _dense_init(), (axes.CLASSES, axes.CLS_TOKENS, axes.EMBED)),
            (cfg.class_rows, cfg.cls_token_num, cfg.dim))
        parts = []
        if labels is not None:
            parts.append(jnp.take(cls_table, labels, axis=0))  # [B, C, D]
        if tokens is not None and tokens.shape[1]:
            parts.append(jnp.take(tok_table, tokens, axis=0))  # [B, S, D]
        x = jnp.concatenate(parts, axis=1).astype(dt) if len(parts) > 1 else parts[0].astype(dt)
        x = nn.Dropout(cfg.token_dropout)(x, deterministic=deterministic)
        B, S = x.shape[:2]

        rope = jax.lax.dynamic_slice_in_dim(rope_table(cfg), start, S)  # [S, D/2, 2]
        q_pos = start + jnp.arange(S)
        if cache is not None:
            k_pos = jnp.arange(cache["k"][0].shape[2])
            mask = (k_pos[None, :] <= q_pos[:, None]) if cfg.causal else (k_pos[None, :] < start + S)[None]
            mask = jnp.broadcast_to(mask, (S, k_pos.shape[0]))
        else:
            mask = jnp.tril(jnp.ones((S, S), bool)) if cfg.causal else jnp.ones((S, S), bool)
        mask = mask[None, None]  # [1, 1, S, M]
        new = []
        for i in range(cfg.num_layers):
            x, layer = Block(cfg, name=f"layers_{i}")(
                x, rope, mask, None if cache is None else (cache["k"][i], cache["v"][i]), start, deterministic)
            new.append(layer)
        if cache is not None:
            cache = {"k": tuple(k for k, _ in new), "v": tuple(v for _, v in new)}
        x = RMSNorm(cfg.norm_eps, dt, name="norm")(x)
        out = dense_param(self, cfg, "output", (cfg.dim, cfg.vocab_size), (axes.EMBED, axes.VOCAB),
                          init=nn.initializers.zeros)
        logits = project(x, out.astype(dt), out_dtype=jnp.float32, layout=cfg.weight_layout, out=(cfg.vocab_size,))
        return logits.astype(jnp.float32), cache


def init_cache(cfg: TransformerConfig, batch: int, max_len: int | None = None,
               dtype: Any = None) -> Cache:
    """Zeroed cache `{"k", "v"}`, each a tuple of `num_layers` arrays `[B, kv_heads, max_len, head_dim]`."""
    shape = (batch, cfg.kv_heads, max_len or cfg.max_len, cfg.head_dim)
    dtype = dtype or jnp.dtype(cfg.dtype)
    zeros = lambda: tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers))
    return {"k": zeros(), "v": zeros()}


def init_params(cfg: TransformerConfig, rng: Array) -> tuple[Any, Any]:
    """Returns `(params, logical_axes)`: plain arrays and the matching tree of logical axis names."""
    cfg.validate()
    model = Transformer(cfg)
    boxed = model.init(rng, jnp.zeros((1, 1), jnp.int32), jnp.zeros((1,), jnp.int32))["params"]
    return nn.unbox(boxed), nn.get_partition_spec(boxed)


def param_shapes(cfg: Any) -> Any:
    """Shapes/dtypes of the parameters of any model family, without allocating them."""
    return jax.eval_shape(lambda r: cfg.init(r)[0], jax.random.key(0))


def param_logical_axes(cfg: TransformerConfig) -> Any:
    """The tree of logical axis names (PartitionSpecs) of the parameters, without allocating them."""
    cfg.validate()
    boxed = jax.eval_shape(lambda r: Transformer(cfg).init(r, jnp.zeros((1, 1), jnp.int32),
                                                           jnp.zeros((1,), jnp.int32))["params"], jax.random.key(0))
    return nn.get_partition_spec(boxed)
