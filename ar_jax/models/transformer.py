"""The one decoder: conditioned on a prefix (class, text, caption), LlamaGen-shaped, causal (AR) or bidirectional.

Sequence layout (LlamaGen's): `[prefix_0 .. prefix_{C-1}, tok_0, tok_1, ...]`, the prefix being the condition's rows
(class tokens, a text prompt, or caption features: `ar_jax.models.conditions`); the output at sequence position
`C - 1 + j` predicts image token `j`. A text model with `text_head` also goes the other way (image-to-text, early
fusion as in Chameleon): after the T image tokens of the null (empty) prompt come `text_len + 1` text rows,
`[bos, caption_0, ..]` embedded by the prompt's table, and the output at position `C + T + i` predicts caption token
`i` (then `eos`) from its own head `text_output`. Image positions read `output` (image codes only), text positions
`text_output` (text ids only): the per-position restriction of the vocabulary is the choice of head. Rotary
embeddings decide which keys a query reads but move no value, so a text position learns what the image holds more
easily than where; `image_positions` adds absolute positions to the image tokens' embeddings (learned, as ImageGPT's,
or fixed 2-D sine-cosine).
Pre-norm RMSNorm blocks, SwiGLU, grouped-query attention with interleaved rotary embeddings (1-D or LlamaGen's
2-D grid form; class and caption rows zero).
The KV cache is data: `{"k", "v"}`, each a tuple of one array `[B, kv_heads, max_len, head_dim]` per layer,
passed in and returned; a call writes its keys/values at `start` with `lax.dynamic_update_slice`. One array
per layer, not one stacked `[layers, ...]` array (XLA updates a layer's array in place), heads-major so decoding
attention reads it without a transposed copy.

`scan_layers` runs the blocks as one `nn.scan` (params stacked `[layers, ...]`: compile time independent of depth) and
`remat` recomputes a block's activations in the backward pass; both change training only, decoding unstacks
(`prepare`). Activations carry logical axis names (`sharding.constrain`, a no-op without a mesh in context).

The model is the same on every platform: the operations that differ (projections, attention, the decode layout of
the weights) are methods of the `backend` (`ar_jax.backends`) it is built with, a static part of its definition;
the default is the plain-XLA reference.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from ar_jax import axes, backends
from ar_jax.backends import Backend, Prepared
from ar_jax.models import conditions, losses
from ar_jax.sharding import constrain

Array = jax.Array
Cache = dict[str, tuple[Array, ...]]


IMAGE_POSITIONS = ("none", "learned", "sincos")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of the decoder; eval/decode variants by `.replace(...)`."""

    vocab_size: int  # image-token vocabulary (plus a [MASK] id for MaskGIT, if any)
    seq_len: int  # image tokens per sample (LlamaGen's block_size)
    num_classes: int  # class labels 0..num_classes-1; 0 means unconditional (condition="class")
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
    cls_token_num: int = 1  # class (or LlamaGen caption) rows before the image tokens
    condition: str = "class"  # what the prefix is (`conditions.KINDS`): "class", "text" or "caption"
    text_len: int = 0  # condition="text": prompt tokens (left-padded), followed by one begin-image row
    text_vocab_size: int = 0  # condition="text": prompt token ids 0..text_vocab_size-1 (0 is padding)
    caption_dim: int = 0  # condition="caption": width of the caption features (LlamaGen t2i: T5's 2048)
    text_head: bool = False  # condition="text": also predict text after the image (image-to-text), own output head
    image_context: str = "causal"  # text_head: how an image before its caption attends to itself: "causal" (as
    # Chameleon) or "full" (both directions, a prefix-LM as PaliGemma's: every image token sees the whole image)
    image_positions: str = "none"  # absolute positions added to the image tokens' embeddings: "none", "learned"
    # (a table `[seq_len, dim]`), "sincos" (fixed 2-D sine-cosine features of row and column, as MAE's)
    null_class: bool = True  # an extra class row (id num_classes) for CFG / label dropout
    token_dropout: float = 0.0
    resid_dropout: float = 0.0
    ffn_dropout: float = 0.0
    attn_dropout: float = 0.0
    causal: bool = True  # False: bidirectional (MaskGIT)
    dtype: str = "float32"  # compute dtype; parameters stay float32, logits are float32
    scan_layers: bool = False  # one `nn.scan` over the blocks: params `layers/...` stacked `[num_layers, ...]`
    remat: str = "none"  # recompute each block's activations in the backward pass: a key of `REMAT_POLICIES`

    exact_likelihood: ClassVar[bool] = True  # token_nll is the exact NLL (the model-family protocol)

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
    def prefix_len(self) -> int:
        """Condition rows before the image tokens (`conditions.prefix_len`)."""
        return conditions.prefix_len(self)

    @property
    def suffix_len(self) -> int:
        """Text rows after the image tokens (`text_head`): `bos` and up to `text_len` caption tokens; 0 without."""
        return self.text_len + 1 if self.text_head else 0

    @property
    def max_len(self) -> int:
        """Longest sequence the model sees: the condition's rows + all image tokens (+ the text suffix)."""
        return self.prefix_len + self.seq_len + self.suffix_len

    # The model-family protocol (shared with other families, e.g. PixelCNN): what training, evaluation and
    # pipelines call, so that they never branch on the model class.
    def init(self, rng: Array) -> tuple[Any, Any]:
        """`(params, logical_axes)`."""
        return init_params(self, rng)

    def logical_axes(self) -> Any:
        return param_logical_axes(self)

    def token_nll(self, params: Any, tokens: Array, cond: Any, rng: Array | None = None,
                  backend: Backend | None = None) -> Array:
        """Teacher-forced NLL in nats of each image token `[B, T]` given the condition (dropout on when rng is
        given)."""
        logits, _ = Transformer(self, backend or backends.XLA).apply({"params": params}, tokens[:, :-1], cond,
                                                                     deterministic=rng is None,
                                                                     rngs=None if rng is None else {"dropout": rng})
        return losses.token_nll(logits[:, self.prefix_len - 1:], tokens)  # position C-1+j predicts token j

    def sequence_nll(self, params: Any, tokens: Array, cond: Any, text: Array, rng: Array | None = None,
                     backend: Backend | None = None, i2t: Array | None = None) -> tuple[Array, Array]:
        """Teacher-forced NLL in nats of the image tokens `[B, T]` given `cond` and of the text after them
        `[B, text_len + 1]`, in one pass over the whole sequence (`text_head` models). `text [B, text_len + 2]` is
        `[bos, caption.., eos, 0..]`: all but its last id are fed, all but its first are the targets (padding
        targets included: the caller masks them). `i2t [B]` bool: the image-to-text rows, whose image attends to
        itself both ways where `image_context="full"` (their image NLL then is no likelihood: the caller drops it)."""
        full = None
        if self.image_context == "full" and i2t is not None:
            full = jnp.where(i2t, self.prefix_len + self.seq_len, 0).astype(jnp.int32)
        (image, txt), _ = Transformer(self, backend or backends.XLA).apply(
            {"params": params}, tokens, cond, text=text[:, :-1], heads="both", deterministic=rng is None,
            rngs=None if rng is None else {"dropout": rng}, full_prefix=full)
        C = self.prefix_len
        return losses.token_nll(image[:, C - 1:C - 1 + self.seq_len], tokens), losses.token_nll(txt, text[:, 1:])

    def decoding(self, params: Any, backend: Backend | None = None) -> tuple[TransformerConfig, Prepared]:
        """`(cfg, prepared)`: the weights as `backend` (default: where they live) reads them fastest when decoding,
        made once outside any jit; every sampler takes the result as it takes params."""
        return self, prepare(params, backend)

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
        if self.image_context not in ("causal", "full"):
            raise ValueError(f"image_context={self.image_context!r} is not one of 'causal', 'full'.")
        if self.image_context == "full" and not self.text_head:
            raise ValueError("image_context='full' (an image attending to itself both ways before its caption) needs "
                             "text_head=True (image-to-text); set image_context='causal'.")
        if self.image_positions not in IMAGE_POSITIONS:
            raise ValueError(f"image_positions={self.image_positions!r} is not one of {IMAGE_POSITIONS}.")
        if self.image_positions == "sincos" and (math.isqrt(self.seq_len) ** 2 != self.seq_len or self.dim % 4):
            raise ValueError(f"image_positions='sincos' needs a square token grid (seq_len={self.seq_len}) and dim "
                             f"divisible by 4 (dim={self.dim}); use image_positions='learned'.")
        if self.rope not in ("1d", "2d"):
            raise ValueError(f"rope={self.rope!r} is not one of '1d', '2d'.")
        if self.rope == "2d" and math.isqrt(self.seq_len) ** 2 != self.seq_len:
            raise ValueError(f"rope='2d' needs a square token grid but seq_len={self.seq_len}; "
                             "use rope='1d' or a square number of tokens.")
        if self.num_classes == 0 and not self.null_class:
            raise ValueError("an unconditional model (num_classes=0) needs null_class=True for its start token.")
        if self.cls_token_num < 1:
            raise ValueError(f"cls_token_num={self.cls_token_num} must be at least 1.")
        if self.condition not in conditions.KINDS:
            raise ValueError(f"condition={self.condition!r} is not one of {conditions.KINDS}.")
        if self.condition == "text" and (self.text_len < 1 or self.text_vocab_size < 2):
            raise ValueError(f"condition='text' needs text_len >= 1 and text_vocab_size >= 2, got {self.text_len} and "
                             f"{self.text_vocab_size}; set config.text.max_len and train or give a tokenizer.")
        if self.text_head and (self.condition != "text" or not self.causal):
            raise ValueError(f"text_head=True (image-to-text) needs a causal text model (condition='text', family "
                             f"'transformer'), got condition={self.condition!r}, causal={self.causal}; set "
                             "config.model.text_head=False or config.model.condition='text'.")
        if self.condition == "caption" and self.caption_dim < 1:
            raise ValueError(f"condition='caption' needs caption_dim >= 1, got {self.caption_dim}.")
        if self.attn_dropout:
            raise ValueError(f"attn_dropout={self.attn_dropout} is not supported; set it to 0.0 "
                             "(LlamaGen's models use 0; use resid_dropout / ffn_dropout).")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype={self.dtype!r} must be 'float32', 'bfloat16' or 'float16'.")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat={self.remat!r} is not one of {tuple(REMAT_POLICIES)}; set config.model.remat.")


def sincos_positions(cfg: TransformerConfig, scale: float = 0.02) -> Array:
    """Fixed absolute positions `[seq_len, dim]` of a square token grid: sines and cosines of the row (first half of
    `dim`) and the column (second half) at geometric frequencies, RMS `scale` (the embeddings' initial scale), so
    "which column" is a linear feature from the first step."""
    grid, quarter = math.isqrt(cfg.seq_len), cfg.dim // 4
    freqs = 1.0 / (10_000.0 ** (jnp.arange(quarter, dtype=jnp.float32) / quarter))
    ang = jnp.outer(jnp.arange(grid, dtype=jnp.float32), freqs)  # [grid, dim // 4]
    axis = jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], axis=-1)  # [grid, dim // 2]
    rows = jnp.broadcast_to(axis[:, None], (grid, grid, cfg.dim // 2))
    cols = jnp.broadcast_to(axis[None, :], (grid, grid, cfg.dim // 2))
    return scale * math.sqrt(2) * jnp.concatenate([rows, cols], axis=-1).reshape(cfg.seq_len, cfg.dim)


def _angles_1d(n: int, head_dim: int, base: float) -> Array:
    """1-D rotary (cos, sin) `[n, head_dim // 2, 2]` of positions 0..n-1."""
    freqs = 1.0 / (base ** (jnp.arange(0, head_dim, 2)[: head_dim // 2].astype(jnp.float32) / head_dim))
    ang = jnp.outer(jnp.arange(n, dtype=jnp.float32), freqs)
    return jnp.stack([jnp.cos(ang), jnp.sin(ang)], axis=-1)


def rope_table(cfg: TransformerConfig) -> Array:
    """Rotary angles `[max_len, head_dim // 2, 2]` (cos, sin). Class and caption rows are zero (LlamaGen); a text
    prompt's rows get 1-D angles of their position, so attention sees word order, and so do the text rows after the
    image (`text_head`: angles of their index in that suffix)."""
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
    C = cfg.prefix_len
    prefix = jnp.zeros((C, n // 2, 2), jnp.float32)
    if cfg.condition == "text":
        prefix = _angles_1d(C, n, cfg.rope_base)
    if cfg.suffix_len:
        return jnp.concatenate([prefix, table, _angles_1d(cfg.suffix_len, n, cfg.rope_base)])
    return jnp.concatenate([prefix, table])


def apply_rope(x: Array, rope: Array) -> Array:
    """Rotate interleaved pairs `(x[2i], x[2i+1])`. x `[B, S, H, D]`, rope `[S, D//2, 2]` (or per row `[B, S, ..]`)."""
    xs = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
    rope = rope if rope.ndim == 4 else rope[None]
    cos, sin = rope[:, :, None, :, 0], rope[:, :, None, :, 1]
    out = jnp.stack([xs[..., 0] * cos - xs[..., 1] * sin, xs[..., 1] * cos + xs[..., 0] * sin], axis=-1)
    return out.reshape(x.shape).astype(x.dtype)


def dense_param(module: nn.Module, backend: Backend, name: str, shape: tuple, names: tuple, n_in: int = 1,
                init: Any = None) -> Array:
    """A projection weight `[*in, *out]` with logical axis `names`, stored as `backend.weight_spec` says."""
    shape, names = backend.weight_spec(shape, names, n_in)
    return module.param(name, nn.with_logical_partitioning(init or _dense_init(), names), shape)


PROJECTIONS = {"wq": 1, "wk": 1, "wv": 1, "wo": 2, "w1": 1, "w3": 1, "w2": 1, "output": 1,
               "text_output": 1}  # weight: input dims


def prepare(params: Any, backend: Backend | None = None) -> Prepared:
    """Transformer parameters re-laid-out once for decoding by `backend` (default: where they live); a scanned
    model's stacked layers are unstacked first (decoding keeps one cache array per layer)."""
    if not isinstance(params, Prepared):
        params = unstack_layers(params)
    return backends.prepare(params, PROJECTIONS, backend)


def stack_layers(params: Any, num_layers: int) -> Any:
    """Params of an unscanned model (`layers_0 .. layers_{L-1}`) as a scanned one holds them: `layers`, each leaf
    `[L, ...]` (e.g. a LlamaGen import for a `scan_layers=True` run)."""
    rest = {k: v for k, v in params.items() if not k.startswith("layers_")}
    return {**rest, "layers": jax.tree.map(lambda *xs: jnp.stack(xs), *(params[f"layers_{i}"]
                                                                       for i in range(num_layers)))}


def unstack_layers(params: Any) -> Any:
    """`stack_layers` undone: `layers` `[L, ...]` -> `layers_0 .. layers_{L-1}`; params without `layers` as given."""
    if "layers" not in params:
        return params
    L = jax.tree.leaves(params["layers"])[0].shape[0]
    rest = {k: v for k, v in params.items() if k != "layers"}
    return {**rest, **{f"layers_{i}": jax.tree.map(lambda x, i=i: x[i], params["layers"]) for i in range(L)}}


class DecodingCache:
    """`prepare(params)` kept for the params object it was made from, remade when handed another one."""

    def __init__(self) -> None:
        self._made_from: Any = None
        self._made: Prepared | None = None

    def get(self, params: Any) -> Prepared:
        if self._made is None or self._made_from is not params:
            self._made_from, self._made = params, prepare(params)
        return self._made


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
    backend: Backend = backends.XLA

    @nn.compact
    def __call__(self, x: Array, rope: Array, mask: Array | None, cache: tuple[Array, Array] | None,
                 start: Array | int, deterministic: bool,
                 causal: bool = True) -> tuple[Array, tuple[Array, Array] | None]:
        """x `[B, S, dim]`; without a cache `mask` is extra to causality (or None; with `causal=False` it is the
        whole mask), with one it is the whole mask `[B|1, 1, S, M]` over the cache."""
        cfg, be, dt = self.cfg, self.backend, jnp.dtype(self.cfg.dtype)
        H, KV, D = cfg.num_heads, cfg.kv_heads, cfg.head_dim
        p = lambda name, shape, names, n_in=1: dense_param(self, be, name, shape, names, n_in).astype(dt)
        wq = p("wq", (cfg.dim, H, D), (axes.EMBED, axes.HEADS, axes.HEAD_DIM))
        wk = p("wk", (cfg.dim, KV, D), (axes.EMBED, axes.KV_HEADS, axes.HEAD_DIM))
        wv = p("wv", (cfg.dim, KV, D), (axes.EMBED, axes.KV_HEADS, axes.HEAD_DIM))
        wo = p("wo", (H, D, cfg.dim), (axes.HEADS, axes.HEAD_DIM, axes.EMBED), 2)
        q = constrain(apply_rope(be.dense(x, wq, 1, (H, D)), rope), ACT_HEADS)  # [B, S, H, D]
        k = constrain(apply_rope(be.dense(x, wk, 1, (KV, D)), rope), ACT_KV)  # [B, S, KV, D]
        v = constrain(be.dense(x, wv, 1, (KV, D)), ACT_KV)
        if cache is None:
            out = constrain(be.attention(q, k, v, causal=cfg.causal and causal, mask=mask, scale=D ** -0.5),
                            ACT_HEADS)
        else:
            ck, cv = cache  # [B, KV, M, D]
            ck, cv = (write_cache(c, new.transpose(0, 2, 1, 3).astype(c.dtype), start) for c, new in ((ck, k), (cv, v)))
            cache = (ck, cv)
            out = be.cached_attention(q, ck, cv, start=start, causal=cfg.causal, mask=mask,
                                      lengths_only=not conditions.has_padding(cfg),
                                      scale=D ** -0.5)
        out = be.dense(out, wo, 2, (cfg.dim,))
        return nn.Dropout(cfg.resid_dropout)(out, deterministic=deterministic), cache


def write_cache(cache: Array, new: Array, start: Array | int) -> Array:
    """`new [B, KV, S, D]` written into `cache [B, KV, M, D]` at position `start`: one scalar, or one per row `[B]`
    (rows of a batch that accepted different numbers of speculated tokens)."""
    if jnp.ndim(start) == 0:
        return jax.lax.dynamic_update_slice(cache, new, (0, 0, start, 0))
    return jax.vmap(lambda c, x, s: jax.lax.dynamic_update_slice(c, x, (0, s, 0)))(cache, new, start)


class FeedForward(nn.Module):
    cfg: TransformerConfig
    backend: Backend = backends.XLA

    @nn.compact
    def __call__(self, x: Array, deterministic: bool) -> Array:
        cfg, be, dt = self.cfg, self.backend, jnp.dtype(self.cfg.dtype)
        p = lambda name, shape, names: dense_param(self, be, name, shape, names).astype(dt)
        w1 = p("w1", (cfg.dim, cfg.hidden_dim), (axes.EMBED, axes.MLP))
        w3 = p("w3", (cfg.dim, cfg.hidden_dim), (axes.EMBED, axes.MLP))
        w2 = p("w2", (cfg.hidden_dim, cfg.dim), (axes.MLP, axes.EMBED))
        h = nn.silu(be.dense(x, w1, 1, (cfg.hidden_dim,))) * be.dense(x, w3, 1, (cfg.hidden_dim,))
        h = constrain(h, ACT_MLP)  # [B, S, hidden]
        return nn.Dropout(cfg.ffn_dropout)(be.dense(h, w2, 1, (cfg.dim,)), deterministic=deterministic)


class Block(nn.Module):
    cfg: TransformerConfig
    backend: Backend = backends.XLA

    @nn.compact
    def __call__(self, x, rope, mask, cache, start, deterministic, causal=True):
        """x `[B, S, dim]` -> `(x, cache)`; the residual stream is laid out by its logical names at both ends."""
        dt = jnp.dtype(self.cfg.dtype)
        x = constrain(x, ACT_EMBED)
        h, cache = Attention(self.cfg, self.backend, name="attention")(
            RMSNorm(self.cfg.norm_eps, dt, name="attention_norm")(x), rope, mask, cache, start, deterministic, causal)
        x = x + h
        x = x + FeedForward(self.cfg, self.backend, name="feed_forward")(
            RMSNorm(self.cfg.norm_eps, dt, name="ffn_norm")(x), deterministic)
        return constrain(x, ACT_EMBED), cache


# What `remat` keeps of a block for the backward pass: "full" only its input; "dots" also the projections' outputs
# (matmuls without batch dimensions), recomputing attention scores, norms and activations.
REMAT_POLICIES = {"none": None, "full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def block_class(cfg: TransformerConfig, scanned: bool) -> type[nn.Module]:
    """`Block`, or `Block` rematerialised as `cfg.remat` says (its `deterministic` argument static)."""
    if cfg.remat == "none":
        return Block
    return nn.remat(Block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not scanned, static_argnums=(6, 7))


HEADS = ("image", "text", "both", "hidden")  # which output head(s) a call reads (`Transformer.__call__`)
ACT_EMBED = (axes.BATCH, axes.LENGTH, axes.EMBED)  # logical names of activations (`sharding.constrain`)
ACT_HEADS = (axes.BATCH, axes.LENGTH, axes.HEADS, axes.HEAD_DIM)
ACT_KV = (axes.BATCH, axes.LENGTH, axes.KV_HEADS, axes.HEAD_DIM)
ACT_MLP = (axes.BATCH, axes.LENGTH, axes.MLP)
ACT_VOCAB = (axes.BATCH, axes.LENGTH, axes.VOCAB)


class Transformer(nn.Module):
    """Decoder over `[condition prefix, image tokens, text suffix?]`; returns float32 logits and the cache."""

    cfg: TransformerConfig
    backend: Backend = backends.XLA

    @nn.compact
    def __call__(self, tokens: Array | None, cond: Any = None, *, text: Array | None = None, start: Array | int = 0,
                 cache: Cache | None = None, deterministic: bool = True, heads: str = "image",
                 full_prefix: Array | None = None) -> tuple[Array | tuple[Array, Array], Cache | None]:
        """tokens `[B, S]` int image codes (or None), `cond` a condition (`ar_jax.models.conditions`; or None),
        `text` `[B, L]` text ids after the image tokens (`text_head` models: `[bos, caption..]`; or None).
        With a cache and no condition, `start` may be one position per row `[B]` (each row's own write position;
        positions past `max_len` read the last rotary row, for queries no kept output depends on).

        With a condition its prefix rows are prepended, so the sequence is `[prefix(C), tokens, text]`. `start` is the
        sequence position of the first element (0 when a condition is given). With a cache, keys/values are
        written at `start` and attention reads the cache up to the written positions. `heads` (static): "image"
        gives image logits `[B, S, vocab_size]` at every position, "text" text logits `[B, S, text_vocab_size]`,
        "both" (an int `start`) the pair of image logits before position `C + T` and text logits from it on, "hidden"
        the pair of image logits and the final normed hidden state `[B, S, dim]` (what Medusa heads read).
        `full_prefix` `[B]` int: each row's first `full_prefix` sequence positions attend to one another both ways
        (a prefix-LM: an image before its caption, `image_context="full"`); None: causal throughout.
        """
        cfg, be, dt = self.cfg, self.backend, jnp.dtype(self.cfg.dtype)
        if heads not in HEADS:
            raise ValueError(f"heads={heads!r} is not one of {HEADS}.")
        if (text is not None or heads in ("text", "both")) and not cfg.text_head:
            raise ValueError("text after the image needs a model trained both ways (config.model.text_head=True).")
        tok_table = self.param("tok_embeddings", nn.with_logical_partitioning(
            _dense_init(), (axes.VOCAB, axes.EMBED)), (cfg.vocab_size, cfg.dim))
        text_table = conditions.text_table(self, cfg, _dense_init()) if cfg.text_head else None
        parts, valid = [], None
        if cond is not None:
            prefix, valid = conditions.embed(self, cfg, cond, _dense_init(), text_table)  # [B, C, D], [B, C] | None
            parts.append(prefix)
        if tokens is not None and tokens.shape[1]:
            x_tok = jnp.take(tok_table, tokens, axis=0)  # [B, S, D]
            if cfg.image_positions != "none":  # where each image token is, in what attention reads (rotary: no value)
                pos = (sincos_positions(cfg) if cfg.image_positions == "sincos" else self.param(
                    "image_positions", nn.with_logical_partitioning(_dense_init(), (None, axes.EMBED)),
                    (cfg.seq_len, cfg.dim)))
                first = 0 if cond is not None else start - cfg.prefix_len  # image index of tokens[:, 0]
                if jnp.ndim(first):  # one per row
                    x_tok = x_tok + pos[jnp.clip(first[:, None] + jnp.arange(tokens.shape[1]), 0, cfg.seq_len - 1)]
                else:
                    x_tok = x_tok + jax.lax.dynamic_slice_in_dim(pos, first, tokens.shape[1])[None]
            parts.append(x_tok)
        if text is not None and text.shape[1]:
            parts.append(jnp.take(text_table, text, axis=0))  # [B, L, D]
        x = jnp.concatenate(parts, axis=1).astype(dt) if len(parts) > 1 else parts[0].astype(dt)
        x = constrain(nn.Dropout(cfg.token_dropout)(x, deterministic=deterministic), ACT_EMBED)
        B, S = x.shape[:2]
        if valid is not None:  # padding rows of the prefix: keys no query sees
            valid = jnp.concatenate([valid, jnp.ones((B, S - valid.shape[1]), bool)], axis=1)  # [B, S]

        per_row = jnp.ndim(start) == 1
        if per_row and (cache is None or cond is not None or full_prefix is not None):
            raise ValueError("one start per row [B] is for cached calls without a condition (decoding after the "
                             "prefill); pass a scalar start otherwise.")
        if per_row:
            q_pos = start[:, None] + jnp.arange(S)  # [B, S]
            rope = rope_table(cfg)[jnp.minimum(q_pos, cfg.max_len - 1)]  # [B, S, D/2, 2]
        else:
            rope = jax.lax.dynamic_slice_in_dim(rope_table(cfg), start, S)  # [S, D/2, 2]
            q_pos = start + jnp.arange(S)
        mask, causal = None, True
        if cache is None and full_prefix is not None:  # the whole mask: causal, or both ways inside the prefix
            pos = jnp.arange(S)
            mask = (pos[None, :] <= pos[:, None])[None] | (pos[None, None, :] < full_prefix[:, None, None])
            if valid is not None:
                mask = mask & (valid[:, None, :] | jnp.eye(S, dtype=bool)[None])
            mask, causal = mask[:, None], False  # [B, 1, S, S]
        elif cache is None and valid is not None:  # extra to causality; a padding row sees itself only
            mask = (valid[:, None, :] | jnp.eye(S, dtype=bool)[None])[:, None]  # [B, 1, S, S]
        elif cache is not None:
            k_pos = jnp.arange(cache["k"][0].shape[2])
            if per_row:
                if not cfg.causal:
                    raise ValueError("one start per row needs a causal model (config causal=True).")
                mask = k_pos[None, None, :] <= q_pos[:, :, None]  # [B, S, M]
            else:
                mask = (k_pos[None, :] <= q_pos[:, None]) if cfg.causal else (k_pos[None, :] < start + S)[None]
                mask = jnp.broadcast_to(mask, (S, k_pos.shape[0]))[None]  # [1, S, M]
            if full_prefix is not None:  # a prefill: both ways inside each row's prefix, never past what is written
                mask = mask | ((k_pos[None, None, :] < full_prefix[:, None, None]) & (k_pos < start + S)[None, None])
            if "valid" in cache:
                if valid is not None:
                    cache = {**cache, "valid": jax.lax.dynamic_update_slice(cache["valid"], valid, (0, start))}
                mask = mask & (cache["valid"][:, None, :] | (k_pos == q_pos[..., None]))
            mask = mask[:, None]  # [B|1, 1, S, M]
        # scanned: one block's program over params `layers/...` stacked `[num_layers, ...]`; prepared (unstacked)
        # params of a scanned model (`prepare`), and every call with a cache, take the loop over `layers_{i}`
        stacked = cfg.scan_layers and (self.is_initializing() or self.has_variable("params", "layers"))
        if stacked and cache is not None:
            raise ValueError("a scanned model (scan_layers=True) decodes from its layers unstacked, each with its own "
                             "cache array: pass `transformer.prepare(params)` (what every sampler does) or "
                             "`unstack_layers(params)` instead of the stacked params.")
        if stacked:
            layers = nn.scan(block_class(cfg, scanned=True), variable_axes={"params": 0},
                             split_rngs={"params": True, "dropout": True}, in_axes=(nn.broadcast,) * 6,
                             length=cfg.num_layers, metadata_params={nn.PARTITION_NAME: axes.LAYERS})
            x, _ = layers(cfg, be, name="layers")(x, rope, mask, None, start, deterministic, causal)
        else:
            new = []
            layer_class = block_class(cfg, scanned=False) if cache is None else Block
            for i in range(cfg.num_layers):
                x, layer = layer_class(cfg, be, name=f"layers_{i}")(
                    x, rope, mask, None if cache is None else (cache["k"][i], cache["v"][i]), start, deterministic,
                    causal)
                new.append(layer)
            if cache is not None:
                cache = {**cache, "k": tuple(k for k, _ in new), "v": tuple(v for _, v in new)}
        x = RMSNorm(cfg.norm_eps, dt, name="norm")(x)
        out = dense_param(self, be, "output", (cfg.dim, cfg.vocab_size), (axes.EMBED, axes.VOCAB),
                          init=nn.initializers.zeros)
        image_head = lambda h: constrain(be.dense(h, out.astype(dt), 1, (cfg.vocab_size,), out_dtype=jnp.float32
                                                  ).astype(jnp.float32), ACT_VOCAB)
        if heads == "hidden":
            return (image_head(x), x), cache
        if not cfg.text_head:
            return image_head(x), cache
        text_out = dense_param(self, be, "text_output", (cfg.dim, cfg.text_vocab_size), (axes.EMBED, axes.VOCAB),
                               init=nn.initializers.zeros)
        text_head = lambda h: constrain(be.dense(h, text_out.astype(dt), 1, (cfg.text_vocab_size,),
                                                 out_dtype=jnp.float32).astype(jnp.float32), ACT_VOCAB)
        if heads == "image":
            return image_head(x), cache
        if heads == "text":
            return text_head(x), cache
        if not isinstance(start, int):
            raise ValueError("heads='both' splits the positions where the text starts: it needs a Python int start.")
        split = min(max(cfg.prefix_len + cfg.seq_len - start, 0), S)  # positions before the text suffix
        return (image_head(x[:, :split]), text_head(x[:, split:])), cache


def init_cache(cfg: TransformerConfig, batch: int, max_len: int | None = None,
               dtype: Any = None) -> Cache:
    """Zeroed cache `{"k", "v"}`, each a tuple of `num_layers` arrays `[B, kv_heads, max_len, head_dim]`; a model
    whose prefix can hold padding also keeps which entries are real keys, `"valid"` `[B, max_len]`."""
    shape = (batch, cfg.kv_heads, max_len or cfg.max_len, cfg.head_dim)
    dtype = dtype or jnp.dtype(cfg.dtype)
    zeros = lambda: tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers))
    cache = {"k": zeros(), "v": zeros()}
    if conditions.has_padding(cfg):
        cache["valid"] = jnp.ones((batch, shape[2]), bool)
    return cache


def init_params(cfg: TransformerConfig, rng: Array) -> tuple[Any, Any]:
    """Returns `(params, logical_axes)`: plain arrays and the matching tree of logical axis names."""
    cfg.validate()
    model = Transformer(cfg)
    boxed = model.init(rng, jnp.zeros((1, 1), jnp.int32), conditions.example(cfg))["params"]
    return nn.unbox(boxed), nn.get_partition_spec(boxed)


def param_shapes(cfg: Any) -> Any:
    """Shapes/dtypes of the parameters of any model family, without allocating them."""
    return jax.eval_shape(lambda r: cfg.init(r)[0], jax.random.key(0))


def param_logical_axes(cfg: TransformerConfig) -> Any:
    """The tree of logical axis names (PartitionSpecs) of the parameters, without allocating them."""
    cfg.validate()
    boxed = jax.eval_shape(lambda r: Transformer(cfg).init(r, jnp.zeros((1, 1), jnp.int32),
                                                           conditions.example(cfg))["params"], jax.random.key(0))
    return nn.get_partition_spec(boxed)
