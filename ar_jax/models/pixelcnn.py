"""PixelCNN and Gated PixelCNN: pixel-level AR models from masked convolutions (van den Oord et al., 2016).

Tokens `[B, H*W*C]` (raster order, channel fastest) are embedded to `[B, H, W, C*E]`; a stack of masked
convolutions gives logits `[B, H, W, C, V]`, the categorical over `vocab_size` levels of each subpixel.
Within a pixel the channels are ordered R -> G -> B: feature channels are split into C contiguous groups,
and at the kernel centre group g may read input group g' only if g' < g (mask A, first layer) or g' <= g
(mask B, later layers). The gated model has a vertical stack (rows strictly above) and a horizontal stack
(the current row up to the current pixel), so its receptive field has no blind spot; both are conditioned
on a learned class embedding (row `num_classes` is the null class for CFG / label dropout). The plain stack
and the output head use ELU (as PixelCNN++) rather than ReLU: no dead units, so no gradient is zero by accident.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ar_jax import axes
from ar_jax.models import losses

Array = jax.Array
KINDS = ("pixelcnn", "gated")


@dataclasses.dataclass(frozen=True)
class PixelCNNConfig:
    """Hyper-parameters of a (gated) PixelCNN; implements the model-family protocol of `TransformerConfig`."""

    vocab_size: int  # levels per subpixel token
    token_shape: tuple[int, int, int]  # (H, W, C): the token grid, C tokens per pixel
    num_classes: int  # class labels 0..num_classes-1; 0 means unconditional
    kind: str = "gated"  # "pixelcnn" (plain masked stack, has a blind spot) or "gated" (vertical + horizontal)
    features: int = 60  # channels of each layer (a multiple of C)
    num_layers: int = 6  # masked (gated) layers, the first of type A
    kernel_size: int = 3  # odd; kernel of layers 2..L
    first_kernel_size: int = 7  # odd; kernel of the mask-A first layer
    embed_dim: int = 16  # input embedding per subpixel token
    dropout: float = 0.0  # on each layer's output before its residual add (training only)

    exact_likelihood: ClassVar[bool] = True  # token_nll is the exact NLL (the model-family protocol)
    condition: ClassVar[str] = "class"  # conditioned on class labels only (`ar_jax.models.conditions`)
    null_class: ClassVar[bool] = True  # row num_classes is the null class

    def replace(self, **kw: Any) -> PixelCNNConfig:
        return dataclasses.replace(self, **kw)

    @property
    def seq_len(self) -> int:
        h, w, c = self.token_shape
        return h * w * c

    @property
    def null_label(self) -> int:
        """The label id of the unconditional ("null") class."""
        return self.num_classes

    @property
    def class_rows(self) -> int:
        return self.num_classes + 1

    # The model-family protocol.
    def init(self, rng: Array) -> tuple[Any, Any]:
        """`(params, logical_axes)`."""
        self.validate()
        boxed = jax.jit(functools.partial(_init_boxed, self))(rng)  # one compilation, not op by op
        return nn.unbox(boxed), nn.get_partition_spec(boxed)

    def logical_axes(self) -> Any:
        self.validate()
        return nn.get_partition_spec(jax.eval_shape(functools.partial(_init_boxed, self), jax.random.key(0)))

    def logits(self, params: Any, tokens: Array, labels: Array, rng: Array | None = None) -> Array:
        """Logits `[B, T, V]` float32 of every subpixel given all earlier ones (dropout on when rng is given)."""
        h, w, c = self.token_shape
        x = embed(params, tokens.reshape(-1, h, w, c))
        out = PixelCNN(self).apply({"params": params["net"]}, x, labels, deterministic=rng is None,
                                   rngs=None if rng is None else {"dropout": rng})
        return out.reshape(tokens.shape[0], self.seq_len, self.vocab_size)

    def token_nll(self, params: Any, tokens: Array, labels: Array, rng: Array | None = None,
                  backend: Any = None) -> Array:
        """NLL in nats of each subpixel token `[B, H*W*C]` (dropout on when rng is given)."""
        return losses.token_nll(self.logits(params, tokens, labels, rng), tokens)

    def validate(self) -> None:
        """Raise ValueError naming the bad field and the fix."""
        h, w, c = self.token_shape
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not one of {KINDS}.")
        if min(h, w, c) < 1 or self.vocab_size < 2:
            raise ValueError(f"token_shape={self.token_shape} / vocab_size={self.vocab_size} must be positive "
                             "(vocab_size >= 2).")
        if self.features % c:
            raise ValueError(f"features={self.features} must be a multiple of the {c} channels per pixel "
                             "(one feature group per channel).")
        for name in ("kernel_size", "first_kernel_size"):
            k = getattr(self, name)
            if k < 3 or k % 2 == 0:
                raise ValueError(f"{name}={k} must be odd and >= 3.")
        if self.num_layers < 1 or self.embed_dim < 1:
            raise ValueError(f"num_layers={self.num_layers} and embed_dim={self.embed_dim} must be >= 1.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1).")


def channel_groups(n: int, groups: int, repeat: int = 1) -> np.ndarray:
    """Group id (colour channel) of each of `n * repeat` feature channels: `repeat` copies of C contiguous blocks."""
    return np.tile(np.arange(n) * groups // n, repeat)


def conv_mask(kh: int, kw: int, in_groups: np.ndarray, out_groups: np.ndarray, shape: str,
              mask_type: str) -> np.ndarray:
    """0/1 kernel mask `[kh, kw, Cin, Cout]` float32.

    shape "full": the PixelCNN mask (rows above, and the left of the current row); "vertical": rows strictly
    above (type A) or up to the current row (type B, whose input already sees only rows above); "horizontal":
    the current row, left of centre. At the centre of "full"/"horizontal", group g reads groups < g (A) or <= g (B).
    """
    dy = np.arange(kh)[:, None] - kh // 2  # [kh, 1]
    dx = np.arange(kw)[None, :] - kw // 2  # [1, kw]
    centre_ok = (out_groups[None, :] > in_groups[:, None]) if mask_type == "A" else \
        (out_groups[None, :] >= in_groups[:, None])  # [Cin, Cout]
    if shape == "vertical":
        spatial = (dy < 0) if mask_type == "A" else (dy <= 0)
        spatial = np.broadcast_to(spatial, (kh, kw))
        return np.broadcast_to(spatial[..., None, None], (kh, kw, len(in_groups), len(out_groups))).astype(np.float32)
    if shape == "full":
        before = (dy < 0) | ((dy == 0) & (dx < 0))
    elif shape == "horizontal":
        before = (dy == 0) & (dx < 0)
    else:
        raise ValueError(f"mask shape {shape!r} is not one of 'full', 'vertical', 'horizontal'.")
    centre = (dy == 0) & (dx == 0)
    m = before[..., None, None] | (centre[..., None, None] & centre_ok[None, None])
    return m.astype(np.float32)


class MaskedConv(nn.Module):
    """SAME convolution `[B, H, W, Cin] -> [B, H, W, Cout]` whose kernel is multiplied by a fixed mask."""

    features: int
    kernel: tuple[int, int]
    shape: str
    mask_type: str
    in_groups: tuple[int, ...]
    out_groups: tuple[int, ...]

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kh, kw = self.kernel
        k = self.param("kernel", nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, None, None, None)),
                       (kh, kw, x.shape[-1], self.features))
        b = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, (None,)), (self.features,))
        mask = conv_mask(kh, kw, np.asarray(self.in_groups), np.asarray(self.out_groups), self.shape, self.mask_type)
        y = jax.lax.conv_general_dilated(x, k * mask, (1, 1), ((kh // 2, kh // 2), (kw // 2, kw // 2)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + b


def _gate(x: Array) -> Array:
    """`tanh(a) * sigmoid(b)` over the two halves `[..., 2F] -> [..., F]` (same groups in both halves)."""
    a, b = jnp.split(x, 2, axis=-1)
    return jnp.tanh(a) * jax.nn.sigmoid(b)


class PixelCNN(nn.Module):
    """Embedded tokens `x [B, H, W, C*E]`, labels `[B]` -> logits `[B, H, W, C, V]` float32."""

    cfg: PixelCNNConfig

    @nn.compact
    def __call__(self, x: Array, labels: Array, deterministic: bool = True) -> Array:
        cfg = self.cfg
        C, F, V = cfg.token_shape[2], cfg.features, cfg.vocab_size
        g_in = tuple(channel_groups(x.shape[-1], C))
        g_f, g_2f = tuple(channel_groups(F, C)), tuple(channel_groups(F, C, 2))
        k1, k = (cfg.first_kernel_size,) * 2, (cfg.kernel_size,) * 2
        width = 2 * F if cfg.kind == "gated" else F

        def cond(i: int) -> Array:
            table = self.param(f"cond_{i}", nn.with_logical_partitioning(
                nn.initializers.normal(0.02), (axes.CLASSES, None)), (cfg.class_rows, width))
            return jnp.take(table, labels, axis=0)[:, None, None, :]  # [B, 1, 1, width]

        drop = nn.Dropout(cfg.dropout)
        if cfg.kind == "pixelcnn":
            h = MaskedConv(F, k1, "full", "A", g_in, g_f, name="conv_0")(x) + cond(0)
            for i in range(1, cfg.num_layers):
                y = MaskedConv(F, k, "full", "B", g_f, g_f, name=f"conv_{i}")(nn.elu(h)) + cond(i)
                h = h + drop(y, deterministic=deterministic)
        else:
            v, h = x, x
            for i in range(cfg.num_layers):
                first = i == 0
                mtype, ks, gi = ("A", k1, g_in) if first else ("B", k, g_f)
                v_pre = MaskedConv(2 * F, ks, "vertical", mtype, gi, g_2f, name=f"v_conv_{i}")(v)
                h_pre = MaskedConv(2 * F, (1, ks[1]), "horizontal", mtype, gi, g_2f, name=f"h_conv_{i}")(h)
                h_pre = h_pre + MaskedConv(2 * F, (1, 1), "vertical", "B", g_2f, g_2f, name=f"v_to_h_{i}")(
                    v_pre)  # v sees only rows above: a plain 1x1
                c = cond(i)
                v = _gate(v_pre + c)
                y = MaskedConv(F, (1, 1), "horizontal", "B", g_f, g_f, name=f"h_out_{i}")(
                    drop(_gate(h_pre + c), deterministic=deterministic))
                h = y if first else h + y
        h = MaskedConv(F, (1, 1), "full", "B", g_f, g_f, name="head_0")(nn.elu(h))
        g_out = tuple(np.repeat(np.arange(C), V))
        out = MaskedConv(C * V, (1, 1), "full", "B", g_f, g_out, name="head_1")(nn.elu(h))
        return out.reshape(*out.shape[:3], C, V).astype(jnp.float32)


def embed(params: Any, tokens: Array) -> Array:
    """tokens `[B, H, W, C]` int -> inputs `[B, H, W, C*E]` (channel c's embedding in block c)."""
    x = jnp.take(params["embedding"], tokens, axis=0)  # [B, H, W, C, E]
    return x.reshape(*x.shape[:3], -1)


def _init_boxed(cfg: PixelCNNConfig, rng: Array) -> Any:
    h, w, c = cfg.token_shape
    r_emb, r_net = jax.random.split(rng)
    table = nn.with_logical_partitioning(nn.initializers.normal(1.0), (axes.VOCAB, None))(
        r_emb, (cfg.vocab_size, cfg.embed_dim))
    x = jnp.zeros((1, h, w, c * cfg.embed_dim), jnp.float32)
    net = PixelCNN(cfg).init(r_net, x, jnp.zeros((1,), jnp.int32))["params"]
    return {"embedding": table, "net": net}
