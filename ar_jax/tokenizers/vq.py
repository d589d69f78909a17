"""The VQ tokenizer: a convolutional encoder/decoder (LlamaGen / taming VQGAN family) and a codebook.

images `[B, H, W, C]` in [-1, 1] -> encoder -> quant_conv (1x1) -> nearest codebook entry ->
post_quant_conv (1x1) -> decoder -> images. NHWC throughout. Downsampling is by
`2 ** (len(ch_mult) - 1)`, so a 256x256 image with LlamaGen's VQ-16 (`ch_mult=(1, 1, 2, 2, 4)`)
becomes 16x16 codes. Module names follow LlamaGen's state dict (`conv_blocks_0.res_1.norm1`, ...), so
a checkpoint maps onto it key by key. The quantizer is a pure function (`quantize`) wrapped by one
small module that owns the codebook, so a training recipe (EMA codebook, GAN losses) can sit on top.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ar_jax import backends
from ar_jax.backends import Backend

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class VQConfig:
    """Hyper-parameters of the VQ tokenizer; defaults are LlamaGen's VQ-16."""

    codebook_size: int = 16384  # number of codes (the transformer's vocab_size)
    codebook_embed_dim: int = 8  # width of a code vector
    codebook_l2_norm: bool = True  # look up (and emit) L2-normalised vectors, cosine-similarity style
    commit_loss_beta: float = 0.25  # weight of the commitment loss
    ch: int = 128  # base width of encoder and decoder
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # encoder width multipliers, one level per entry
    decoder_ch_mult: tuple[int, ...] | None = None  # None: same as ch_mult
    z_channels: int = 256  # encoder output / decoder input width
    num_res_blocks: int = 2  # res blocks per encoder level (the decoder has one more)
    in_channels: int = 3
    out_channels: int = 3
    dropout: float = 0.0  # in the res blocks, training only
    norm_groups: int = 32  # GroupNorm groups
    norm_eps: float = 1e-6
    dtype: str = "float32"  # compute dtype; parameters stay float32

    def __post_init__(self) -> None:  # lists (e.g. from JSON) -> tuples, so the config stays hashable
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        if self.decoder_ch_mult is not None:
            object.__setattr__(self, "decoder_ch_mult", tuple(self.decoder_ch_mult))

    def replace(self, **kw: Any) -> VQConfig:
        return dataclasses.replace(self, **kw)

    @property
    def dec_ch_mult(self) -> tuple[int, ...]:
        return tuple(self.decoder_ch_mult or self.ch_mult)

    @property
    def downsample(self) -> int:
        """Image pixels per code along each side."""
        return 2 ** (len(self.ch_mult) - 1)

    def validate(self) -> None:
        """Raise ValueError naming the bad field and the fix."""
        if len(self.ch_mult) != len(self.dec_ch_mult):
            raise ValueError(f"ch_mult={self.ch_mult} and decoder_ch_mult={self.decoder_ch_mult} have different "
                             "lengths, so decoding would not undo the encoder's downsampling; give them equal length.")
        widths = {self.ch * m for m in (*self.ch_mult, *self.dec_ch_mult)}
        bad = sorted(w for w in widths if w % self.norm_groups)
        if bad:
            raise ValueError(f"GroupNorm with norm_groups={self.norm_groups} needs every width ch*ch_mult to be "
                             f"a multiple of it; widths {bad} are not (ch={self.ch}, ch_mult={self.ch_mult}).")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype={self.dtype!r} must be 'float32', 'bfloat16' or 'float16'.")
        if min(self.codebook_size, self.codebook_embed_dim, self.ch, self.z_channels, self.num_res_blocks) < 1:
            raise ValueError("codebook_size, codebook_embed_dim, ch, z_channels and num_res_blocks must be >= 1.")


class Conv3x3(nn.Module):
    """nn.Conv's 'same' 3x3 stride-1 convolution (same parameters, names and initialisers) through the backend's
    `conv3x3` (on CPU Winograd's, a quarter of the multiplications; `lax.conv` elsewhere)."""

    features: int
    dtype: Any
    backend: Backend = backends.XLA

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return self.backend.conv3x3(x, kernel, bias)


def _conv(cfg: VQConfig, backend: Backend, features: int, kernel: int, name: str | None = None, stride: int = 1,
          padding: Any = None) -> nn.Module:
    pad = kernel // 2 if padding is None else padding
    if kernel == 3 and stride == 1 and pad == 1:
        return Conv3x3(features, jnp.dtype(cfg.dtype), backend, name=name)
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=pad, dtype=jnp.dtype(cfg.dtype),
                   name=name)


def _norm(cfg: VQConfig, name: str) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=cfg.norm_groups, epsilon=cfg.norm_eps, use_fast_variance=False,
                        dtype=jnp.dtype(cfg.dtype), name=name)


class ResnetBlock(nn.Module):
    """norm-swish-conv-norm-swish-dropout-conv plus a 1x1 `nin_shortcut` when the width changes."""

    cfg: VQConfig
    backend: Backend
    out_ch: int

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        h = _conv(self.cfg, self.backend, self.out_ch, 3, "conv1")(nn.swish(_norm(self.cfg, "norm1")(x)))
        h = nn.swish(_norm(self.cfg, "norm2")(h))
        h = nn.Dropout(self.cfg.dropout)(h, deterministic=deterministic)
        h = _conv(self.cfg, self.backend, self.out_ch, 3, "conv2")(h)
        if x.shape[-1] != self.out_ch:
            x = _conv(self.cfg, self.backend, self.out_ch, 1, "nin_shortcut")(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all `h*w` positions, 1x1 q/k/v/proj_out, residual."""

    cfg: VQConfig
    backend: Backend

    @nn.compact
    def __call__(self, x: Array) -> Array:
        B, H, W, C = x.shape
        h = _norm(self.cfg, "norm")(x)
        q, k, v = (_conv(self.cfg, self.backend, C, 1, n)(h).reshape(B, H * W, C) for n in ("q", "k", "v"))
        w = jnp.einsum("bic,bjc->bij", q, k, preferred_element_type=jnp.float32) * C ** -0.5  # [B, HW, HW]
        h = jnp.einsum("bij,bjc->bic", jax.nn.softmax(w, axis=-1).astype(v.dtype), v).reshape(B, H, W, C)
        return x + _conv(self.cfg, self.backend, C, 1, "proj_out")(h)


class Downsample(nn.Module):
    """Zero-pad right and bottom by one, then a stride-2 3x3 conv: `[B, H, W, C] -> [B, H/2, W/2, C]`."""

    cfg: VQConfig
    backend: Backend

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return _conv(self.cfg, self.backend, x.shape[-1], 3, "conv", stride=2, padding=0)(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv: `[B, H, W, C] -> [B, 2H, 2W, C]`."""

    cfg: VQConfig
    backend: Backend

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return _conv(self.cfg, self.backend, x.shape[-1], 3, "conv")(x)


class _Level(nn.Module):
    """One resolution level: res blocks, each followed by attention at the lowest resolution, then resampling."""

    cfg: VQConfig
    backend: Backend
    out_ch: int
    num_blocks: int
    attn: bool
    resample: str | None  # "down", "up" or None

    @nn.compact
    def __call__(self, x: Array, deterministic: bool) -> Array:
        for i in range(self.num_blocks):
            x = ResnetBlock(self.cfg, self.backend, self.out_ch, name=f"res_{i}")(x, deterministic)
            if self.attn:
                x = AttnBlock(self.cfg, self.backend, name=f"attn_{i}")(x)
        if self.resample == "down":
            x = Downsample(self.cfg, self.backend, name="downsample")(x)
        elif self.resample == "up":
            x = Upsample(self.cfg, self.backend, name="upsample")(x)
        return x


def _mid(cfg: VQConfig, backend: Backend, x: Array, width: int, deterministic: bool) -> Array:
    x = ResnetBlock(cfg, backend, width, name="mid_0")(x, deterministic)
    x = AttnBlock(cfg, backend, name="mid_1")(x)
    return ResnetBlock(cfg, backend, width, name="mid_2")(x, deterministic)


class Encoder(nn.Module):
    """images `[B, H, W, in_channels]` -> features `[B, H/f, W/f, z_channels]`, f = cfg.downsample."""

    cfg: VQConfig
    backend: Backend

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        cfg, n = self.cfg, len(self.cfg.ch_mult)
        x = _conv(cfg, self.backend, cfg.ch, 3, "conv_in")(x)
        for i, m in enumerate(cfg.ch_mult):
            last = i == n - 1
            x = _Level(cfg, self.backend, cfg.ch * m, cfg.num_res_blocks, attn=last, resample=None if last else "down",
                       name=f"conv_blocks_{i}")(x, deterministic)
        x = _mid(cfg, self.backend, x, x.shape[-1], deterministic)
        return _conv(cfg, self.backend, cfg.z_channels, 3, "conv_out")(nn.swish(_norm(cfg, "norm_out")(x)))


class Decoder(nn.Module):
    """features `[B, h, w, z_channels]` -> images `[B, h*f, w*f, out_channels]`; level 0 is the lowest resolution."""

    cfg: VQConfig
    backend: Backend

    @nn.compact
    def __call__(self, z: Array, deterministic: bool = True) -> Array:
        cfg, mult = self.cfg, self.cfg.dec_ch_mult
        width = cfg.ch * mult[-1]
        x = _conv(cfg, self.backend, width, 3, "conv_in")(z)
        x = _mid(cfg, self.backend, x, width, deterministic)
        for i, m in enumerate(reversed(mult)):
            x = _Level(cfg, self.backend, cfg.ch * m, cfg.num_res_blocks + 1, attn=i == 0,
                       resample="up" if i != len(mult) - 1 else None, name=f"conv_blocks_{i}")(x, deterministic)
        return _conv(cfg, self.backend, cfg.out_channels, 3, "conv_out")(nn.swish(_norm(cfg, "norm_out")(x)))


def l2_normalize(x: Array, eps: float = 1e-12) -> Array:
    """`x / max(|x|, eps)` along the last axis (torch's F.normalize)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def quantize(z: Array, codebook: Array, *, l2_norm: bool, beta: float) -> tuple[Array, Array, dict[str, Array]]:
    """Nearest-code vector quantisation with a straight-through gradient.

    z `[..., D]`, codebook `[K, D]` -> `(z_q [..., D], codes [...] int32, aux)`. Distance
    `|z|^2 + |e|^2 - 2 z.e` (on L2-normalised vectors if `l2_norm`), first index on ties. `z_q` has the
    value of the chosen code and the gradient of `z`. aux: `codebook_loss` (moves codes to z),
    `commit_loss` (beta-weighted, moves z to codes), `perplexity` and `usage` (fraction of codes hit).
    """
    if l2_norm:
        z, codebook = l2_normalize(z), l2_normalize(codebook)
    flat = z.reshape(-1, z.shape[-1]).astype(jnp.float32)
    e = codebook.astype(jnp.float32)
    d = (jnp.sum(flat ** 2, axis=1, keepdims=True) + jnp.sum(e ** 2, axis=1)
         - 2 * jnp.einsum("nd,kd->nk", flat, e, precision=jax.lax.Precision.HIGHEST))  # [N, K]
    codes = jnp.argmin(d, axis=1).astype(jnp.int32)
    e_q = jnp.take(e, codes, axis=0).reshape(z.shape).astype(z.dtype)
    sg = jax.lax.stop_gradient
    counts = jnp.zeros((codebook.shape[0],), jnp.float32).at[codes].add(1.0)
    probs = counts / codes.shape[0]
    aux = {
        "codebook_loss": jnp.mean((e_q - sg(z)).astype(jnp.float32) ** 2),
        "commit_loss": beta * jnp.mean((sg(e_q) - z).astype(jnp.float32) ** 2),
        "perplexity": jnp.exp(-jnp.sum(probs * jnp.log(probs + 1e-10))),
        "usage": jnp.mean(counts > 0),
    }
    return z + sg(e_q - z), codes.reshape(z.shape[:-1]), aux


class VectorQuantizer(nn.Module):
    """Owns the codebook `[K, D]`; `__call__` quantises, `lookup` maps codes back to vectors."""

    cfg: VQConfig

    def setup(self) -> None:
        self.codebook = self.param("codebook", self._init_codebook,
                                   (self.cfg.codebook_size, self.cfg.codebook_embed_dim))

    def _init_codebook(self, rng: Array, shape: tuple[int, int]) -> Array:
        """LlamaGen's init: uniform(-1/K, 1/K), rows L2-normalised if the quantizer normalises."""
        e = jax.random.uniform(rng, shape, minval=-1.0 / shape[0], maxval=1.0 / shape[0])
        return l2_normalize(e) if self.cfg.codebook_l2_norm else e

    def __call__(self, z: Array) -> tuple[Array, Array, dict[str, Array]]:
        return quantize(z, self.codebook, l2_norm=self.cfg.codebook_l2_norm, beta=self.cfg.commit_loss_beta)

    def lookup(self, codes: Array) -> Array:
        """codes `[...]` int -> vectors `[..., D]` (normalised if the quantizer normalises)."""
        e = l2_normalize(self.codebook) if self.cfg.codebook_l2_norm else self.codebook
        return jnp.take(e, codes, axis=0)


class VQModel(nn.Module):
    """The whole tokenizer. `__call__(images)` -> `(recon, codes, aux)` for training; methods for each half."""

    cfg: VQConfig
    backend: Backend = backends.XLA

    def setup(self) -> None:
        cfg = self.cfg
        self.encoder = Encoder(cfg, self.backend)
        self.decoder = Decoder(cfg, self.backend)
        self.quant_conv = _conv(cfg, self.backend, cfg.codebook_embed_dim, 1)
        self.post_quant_conv = _conv(cfg, self.backend, cfg.z_channels, 1)
        self.quantize = VectorQuantizer(cfg)

    def encode(self, images: Array, deterministic: bool = True) -> tuple[Array, Array, dict[str, Array]]:
        """images `[B, H, W, C]` -> `(quant [B, h, w, D], codes [B, h, w], aux)`."""
        return self.quantize(self.quant_conv(self.encoder(images, deterministic)))

    def decode(self, quant: Array, deterministic: bool = True) -> Array:
        """quant `[B, h, w, D]` -> images `[B, H, W, out_channels]` (float32)."""
        return self.decoder(self.post_quant_conv(quant), deterministic).astype(jnp.float32)

    def decode_codes(self, codes: Array) -> Array:
        """codes `[B, h, w]` int -> images `[B, H, W, out_channels]`."""
        return self.decode(self.quantize.lookup(codes).astype(jnp.dtype(self.cfg.dtype)))

    def __call__(self, images: Array, deterministic: bool = True) -> tuple[Array, Array, dict[str, Array]]:
        quant, codes, aux = self.encode(images, deterministic)
        return self.decode(quant, deterministic), codes, aux


def init_params(cfg: VQConfig, rng: Array, image_size: int = 32) -> Any:
    """Random parameters for `VQModel(cfg)` (their shapes do not depend on `image_size`)."""
    cfg.validate()
    image_size = max(image_size, cfg.downsample)
    x = jnp.zeros((1, image_size, image_size, cfg.in_channels), jnp.float32)
    return jax.jit(VQModel(cfg).init)(rng, x)["params"]


def param_shapes(cfg: VQConfig) -> Any:
    """Shapes/dtypes of the parameters, without allocating them."""
    return jax.eval_shape(lambda r: init_params(cfg, r, cfg.downsample), jax.random.key(0))


def _backend(params: Any, backend: Backend | None) -> Backend:
    return backend or backends.for_arrays(params)


@functools.partial(backends.jit, kind="conv", static_argnames=("cfg", "backend"))
def _encode(params: Any, cfg: VQConfig, images: Array, backend: Backend) -> tuple[Array, Array]:
    quant, codes, _ = VQModel(cfg, backend).apply({"params": params}, images, method=VQModel.encode)
    return codes, quant


@functools.partial(backends.jit, kind="conv", static_argnames=("cfg", "backend"))
def _decode(params: Any, cfg: VQConfig, quant: Array, backend: Backend) -> Array:
    return VQModel(cfg, backend).apply({"params": params}, quant, method=VQModel.decode)


@functools.partial(backends.jit, kind="conv", static_argnames=("cfg", "backend"))
def _decode_codes(params: Any, cfg: VQConfig, codes: Array, backend: Backend) -> Array:
    return VQModel(cfg, backend).apply({"params": params}, codes, method=VQModel.decode_codes)


def encode(params: Any, cfg: VQConfig, images: Array, backend: Backend | None = None) -> tuple[Array, Array]:
    """images `[B, H, W, C]` in [-1, 1] -> `(codes [B, h, w] int32, quant [B, h, w, D])`; `backend`: default where
    the params live."""
    return _encode(params, cfg, images, _backend(params, backend))


def decode(params: Any, cfg: VQConfig, quant: Array, backend: Backend | None = None) -> Array:
    """quant `[B, h, w, D]` -> images `[B, H, W, C]` (not clipped)."""
    return _decode(params, cfg, quant, _backend(params, backend))


def decode_codes(params: Any, cfg: VQConfig, codes: Array, backend: Backend | None = None) -> Array:
    """codes `[B, h, w]` -> images `[B, H, W, C]` (not clipped)."""
    return _decode_codes(params, cfg, codes, _backend(params, backend))
