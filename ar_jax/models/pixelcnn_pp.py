"""PixelCNN++ (Salimans et al., 2017): a discretized logistic mixture over shifted-convolution streams.

Tokens `[B, H*W*C]` (raster order, channel fastest, `vocab_size` levels) become values in [-1, 1]. Two streams
see only the past: `u` (down-shifted convolutions: rows strictly above) and `ul` (down- plus right-shifted:
above, and left in the current row). Gated resnet blocks (concat_elu, dropout, `a * sigmoid(b)`, a learned
class row added, row `num_classes` the null class for CFG) run a down pass over `num_stages` resolutions
(stride-2 shifted convolutions between them) and an up pass (shifted transposed convolutions) that reads the
down pass's activations as skip connections. The head gives, per pixel, a mixture of `num_mixtures` discretized
logistics whose channel means depend linearly on the earlier channels (G on R, B on R and G). Bins have width
2/(levels-1) on [-1, 1], the two edge bins are open, so the probabilities of the levels sum to 1.

Within a pixel the network output is shared; R -> G -> B is in the likelihood: with `L_c` the log-marginal of
channels 0..c (`logsumexp_k log pi_k + sum_{c'<=c} log p_k(x_c' | x_<c')`), channel c's NLL is `L_{c-1} - L_c`,
so the per-subpixel NLLs of a pixel sum to its joint mixture NLL.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ar_jax import axes

Array = jax.Array
MIN_LOG_SCALE, MAX_LOG_SCALE = -7.0, 7.0  # as PixelCNN++ below; above: wider than [-1, 1] many times over


@dataclasses.dataclass(frozen=True)
class PixelCNNPPConfig:
    """Hyper-parameters of a PixelCNN++; implements the model-family protocol of `TransformerConfig`."""

    vocab_size: int  # levels per subpixel token (the logistic bins)
    token_shape: tuple[int, int, int]  # (H, W, C): the token grid, C tokens per pixel
    num_classes: int  # class labels 0..num_classes-1; 0 means unconditional
    features: int = 64  # channels of both streams
    num_resnets: int = 2  # gated resnet blocks per stage in the down pass (the up pass has one more after upsampling)
    num_stages: int = 3  # resolutions: H, H/2, ..., H/2**(num_stages-1)
    num_mixtures: int = 5  # logistic components per pixel
    dropout: float = 0.0  # inside each gated resnet block (training only)

    exact_likelihood: ClassVar[bool] = True  # token_nll is the exact NLL (the model-family protocol)
    condition: ClassVar[str] = "class"  # conditioned on class labels only (`ar_jax.models.conditions`)
    null_class: ClassVar[bool] = True  # row num_classes is the null class

    def replace(self, **kw: Any) -> PixelCNNPPConfig:
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

    @property
    def num_outputs(self) -> int:
        """Mixture parameters per pixel: M logits, C means, C log-scales, C(C-1)/2 channel coefficients, each x M."""
        c = self.token_shape[2]
        return self.num_mixtures * (1 + 2 * c + c * (c - 1) // 2)

    # The model-family protocol.
    def init(self, rng: Array) -> tuple[Any, Any]:
        """`(params, logical_axes)`."""
        self.validate()
        boxed = jax.jit(functools.partial(_init_boxed, self))(rng)
        return nn.unbox(boxed), nn.get_partition_spec(boxed)

    def logical_axes(self) -> Any:
        self.validate()
        return nn.get_partition_spec(jax.eval_shape(functools.partial(_init_boxed, self), jax.random.key(0)))

    def mixture(self, params: Any, tokens: Array, labels: Array, rng: Array | None = None) -> Array:
        """Mixture parameters `[B, H, W, num_outputs]` float32 of each pixel given all earlier pixels."""
        h, w, c = self.token_shape
        x = to_values(tokens.reshape(-1, h, w, c), self.vocab_size)
        return PixelCNNPP(self).apply({"params": params}, x, labels, deterministic=rng is None,
                                      rngs=None if rng is None else {"dropout": rng})

    def logits(self, params: Any, tokens: Array, labels: Array, rng: Array | None = None) -> Array:
        """Normalised log-probabilities `[B, T, V]` of every level of every subpixel given the earlier ones."""
        out = self.mixture(params, tokens, labels, rng)
        h, w, c = self.token_shape
        lp = conditional_logits(out, tokens.reshape(-1, h, w, c), self.vocab_size, self.num_mixtures)
        return lp.reshape(tokens.shape[0], self.seq_len, self.vocab_size)

    def token_nll(self, params: Any, tokens: Array, labels: Array, rng: Array | None = None,
                  backend: Any = None) -> Array:
        """NLL in nats of each subpixel token `[B, H*W*C]`: differences of log-marginals within a pixel."""
        out = self.mixture(params, tokens, labels, rng)
        h, w, c = self.token_shape
        marg = log_marginals(out, tokens.reshape(-1, h, w, c), self.vocab_size, self.num_mixtures)  # [B,H,W,C]
        prev = jnp.concatenate([jnp.zeros_like(marg[..., :1]), marg[..., :-1]], axis=-1)
        return (prev - marg).reshape(tokens.shape[0], self.seq_len)

    def validate(self) -> None:
        """Raise ValueError naming the bad field and the fix."""
        h, w, c = self.token_shape
        if min(h, w, c) < 1 or self.vocab_size < 2:
            raise ValueError(f"token_shape={self.token_shape} / vocab_size={self.vocab_size} must be positive "
                             "(vocab_size >= 2).")
        if self.num_stages < 1 or h % 2 ** (self.num_stages - 1) or w % 2 ** (self.num_stages - 1):
            raise ValueError(f"num_stages={self.num_stages} halves the {h}x{w} grid {self.num_stages - 1} times; "
                             "use num_stages >= 1 with H and W divisible by 2**(num_stages-1).")
        for name in ("features", "num_resnets", "num_mixtures"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1).")


# ---- the discretized logistic mixture ---------------------------------------------------------------------------


def to_values(tokens: Array, levels: int) -> Array:
    """Level ids -> bin centres in [-1, 1] float32 (same shape)."""
    return tokens.astype(jnp.float32) * (2.0 / (levels - 1)) - 1.0


def discretized_logistic_logprob(k: Array, mean: Array, log_scale: Array, levels: int) -> Array:
    """log P(level k) under a logistic(mean, exp(log_scale)) binned into `levels` bins on [-1, 1] (edge bins open).

    Inside, `log(sigmoid(a) - sigmoid(b)) = log_sigmoid(a) + log_sigmoid(-b) + log(-expm1(b - a))`: stable in
    both tails. Shapes broadcast.
    """
    half, inv_s = 1.0 / (levels - 1), jnp.exp(-log_scale)
    centred = to_values(k, levels) - mean
    a, b = inv_s * (centred + half), inv_s * (centred - half)
    lower = jax.nn.log_sigmoid(a)  # k = 0: everything below the first bin's upper edge
    upper = jax.nn.log_sigmoid(-b)  # k = levels-1: everything above the last bin's lower edge
    inner = lower + upper + jnp.log(-jnp.expm1(b - a))
    return jnp.where(k == 0, lower, jnp.where(k == levels - 1, upper, inner))


def split_mixture(out: Array, channels: int, mixtures: int) -> tuple[Array, Array, Array, Array]:
    """`out [..., P]` -> log-weights `[..., M]`, means and log-scales `[..., C, M]`, channel coefficients
    `[..., C(C-1)/2, M]`."""
    M, C = mixtures, channels
    log_pi = jax.nn.log_softmax(out[..., :M], axis=-1)
    rest = out[..., M:].reshape(*out.shape[:-1], 2 * C + C * (C - 1) // 2, M)
    means, log_s = rest[..., :C, :], jnp.clip(rest[..., C:2 * C, :], MIN_LOG_SCALE, MAX_LOG_SCALE)
    return log_pi, means, log_s, jnp.tanh(rest[..., 2 * C:, :])


def channel_means(means: Array, coeffs: Array, x: Array) -> Array:
    """Means `[..., C, M]` shifted by the earlier channels' values `x [..., C]`: mean_c += sum_{c'<c} a_cc' x_c'."""
    C, out, pair = means.shape[-2], [], 0
    for c in range(C):
        m = means[..., c, :]
        for cp in range(c):
            m = m + coeffs[..., pair, :] * x[..., cp, None]
            pair += 1
        out.append(m)
    return jnp.stack(out, axis=-2)


def component_logprobs(out: Array, tokens: Array, levels: int, mixtures: int) -> tuple[Array, Array, Array, Array]:
    """`(log_pi [..., M], means [..., C, M], log_scales [..., C, M], log p_k(x_c | x_<c) [..., C, M])` of the
    pixels' true `tokens [..., C]` under their mixture parameters `out [..., P]`."""
    log_pi, means, log_s, coeffs = split_mixture(out, tokens.shape[-1], mixtures)
    means = channel_means(means, coeffs, to_values(tokens, levels))
    return log_pi, means, log_s, discretized_logistic_logprob(tokens[..., None], means, log_s, levels)


def log_marginals(out: Array, tokens: Array, levels: int, mixtures: int) -> Array:
    """`L_c = log p(x_0..x_c)` `[..., C]` of each pixel's first c+1 channels (components marginalised)."""
    log_pi, _, _, lp = component_logprobs(out, tokens, levels, mixtures)
    return jax.nn.logsumexp(log_pi[..., None, :] + jnp.cumsum(lp, axis=-2), axis=-1)


def conditional_logits(out: Array, tokens: Array, levels: int, mixtures: int) -> Array:
    """log p(x_c = v | x_<c) `[..., C, V]` for every level v, given the true earlier channels `tokens [..., C]`."""
    log_pi, means, log_s, lp = component_logprobs(out, tokens, levels, mixtures)
    cum = jnp.cumsum(lp, axis=-2)
    before = jnp.concatenate([jnp.zeros_like(cum[..., :1, :]), cum[..., :-1, :]], axis=-2)  # [..., C, M]: x_<c
    prior = log_pi[..., None, :] + before  # joint of component k and x_<c
    v = jnp.arange(levels)
    lv = discretized_logistic_logprob(v, means[..., None], log_s[..., None], levels)  # [..., C, M, V]
    joint = jax.nn.logsumexp(prior[..., None] + lv, axis=-2)  # [..., C, V]
    return joint - jax.nn.logsumexp(prior, axis=-1)[..., None]


# ---- the network -------------------------------------------------------------------------------------------------


def concat_elu(x: Array) -> Array:
    return nn.elu(jnp.concatenate([x, -x], axis=-1))


def down_shift(x: Array) -> Array:
    """Move every row down by one (a zero row on top)."""
    return jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


def right_shift(x: Array) -> Array:
    """Move every column right by one (a zero column on the left)."""
    return jnp.pad(x, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :-1]


def init_std(path: tuple[str, ...], shape: tuple[int, ...]) -> float:
    """Std of a parameter's initial normal draw, by its name: 0 for biases, 0.02 for class rows, 1/sqrt(fan_in) for
    kernels (0.1 of that for a gated block's last convolution, as PixelCNN++'s init_scale)."""
    if path[-1] == "bias":
        return 0.0
    if path[-1].startswith("cond_"):
        return 0.02
    return (0.1 if "gate_conv" in path else 1.0) / float(np.prod(shape[:-1])) ** 0.5


def _param(module: nn.Module, name: str, shape: tuple[int, ...], names: tuple[str | None, ...] | None = None) -> Array:
    """A parameter declared by shape and logical names; its values come from `_init_boxed` (one draw for all)."""
    names = (None,) * len(shape) if names is None else names
    return module.param(name, nn.with_logical_partitioning(nn.initializers.zeros, names), shape)


def _kernel(module: nn.Module, shape: tuple[int, ...]) -> Array:
    return _param(module, "kernel", shape)


def _bias(module: nn.Module, n: int) -> Array:
    return _param(module, "bias", (n,))


class ShiftedConv(nn.Module):
    """Convolution that reads only rows above and the current row: "down" (kernel centred horizontally) or
    "down_right" (current and left columns); stride 2 halves the grid. `[B, H, W, Cin] -> [B, H/s, W/s, F]`."""

    features: int
    kernel: tuple[int, int]
    shift: str = "down"
    stride: int = 1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kh, kw = self.kernel
        k = _kernel(self, (kh, kw, x.shape[-1], self.features))
        cols = ((kw - 1) // 2, (kw - 1) // 2) if self.shift == "down" else (kw - 1, 0)
        y = jax.lax.conv_general_dilated(x, k, (self.stride,) * 2, ((kh - 1, 0), cols),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + _bias(self, self.features)


class ShiftedDeconv(nn.Module):
    """Stride-2 transposed convolution `[B, H, W, Cin] -> [B, 2H, 2W, F]`: output (2i+a, 2j+b) reads input (i, j)
    (and, for "down", the column neighbours i, j-1 / j+1), never a later row, so the streams stay causal."""

    features: int
    kernel: tuple[int, int]
    shift: str = "down"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kh, kw = self.kernel
        k = _kernel(self, (kh, kw, x.shape[-1], self.features))
        y = jax.lax.conv_transpose(x, k, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        H, W = 2 * x.shape[1], 2 * x.shape[2]
        c0 = (kw - 1) // 2 if self.shift == "down" else 0
        return y[:, :H, c0:c0 + W] + _bias(self, self.features)


class Dense(nn.Module):
    """A 1x1 ("network in network") layer over the last axis."""

    features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return x @ _kernel(self, (x.shape[-1], self.features)) + _bias(self, self.features)


class GatedResnet(nn.Module):
    """`x + a * sigmoid(b)` with `[a, b] = conv(dropout(concat_elu(conv(concat_elu(x)) + nin(concat_elu(skip)))))`
    plus the class row; `x [B, H, W, F]`, `skip [B, H, W, *]` or None, `cond [B, 1, 1, 2F]`."""

    features: int
    kernel: tuple[int, int]
    shift: str
    dropout: float

    @nn.compact
    def __call__(self, x: Array, skip: Array | None, cond: Array, deterministic: bool) -> Array:
        F = self.features
        c1 = ShiftedConv(F, self.kernel, self.shift)(concat_elu(x))
        if skip is not None:
            c1 = c1 + Dense(F)(concat_elu(skip))
        c1 = nn.Dropout(self.dropout)(concat_elu(c1), deterministic=deterministic)
        c2 = ShiftedConv(2 * F, self.kernel, self.shift, name="gate_conv")(c1) + cond
        a, b = jnp.split(c2, 2, axis=-1)
        return x + a * jax.nn.sigmoid(b)


class PixelCNNPP(nn.Module):
    """Pixel values `x [B, H, W, C]` in [-1, 1], labels `[B]` -> mixture parameters `[B, H, W, P]` float32."""

    cfg: PixelCNNPPConfig

    @nn.compact
    def __call__(self, x: Array, labels: Array, deterministic: bool = True) -> Array:
        cfg, F = self.cfg, self.cfg.features
        blocks = itertools.count()

        def resnet(x: Array, skip: Array | None, shift: str) -> Array:
            i = next(blocks)
            table = _param(self, f"cond_{i}", (cfg.class_rows, 2 * F), (axes.CLASSES, None))
            cond = jnp.take(table, labels, axis=0)[:, None, None, :]
            kernel = (2, 3) if shift == "down" else (2, 2)
            return GatedResnet(F, kernel, shift, cfg.dropout, name=f"{shift}_resnet_{i}")(x, skip, cond,
                                                                                             deterministic)

        x = jnp.concatenate([x, jnp.ones_like(x[..., :1])], axis=-1)  # the padding is told apart from zeros
        us = [down_shift(ShiftedConv(F, (2, 3), "down", name="u_in")(x))]
        uls = [down_shift(ShiftedConv(F, (1, 3), "down", name="ul_in_up")(x))
               + right_shift(ShiftedConv(F, (2, 1), "down_right", name="ul_in_left")(x))]
        for s in range(cfg.num_stages):
            if s:
                us.append(ShiftedConv(F, (2, 3), "down", stride=2, name=f"u_down_{s}")(us[-1]))
                uls.append(ShiftedConv(F, (2, 2), "down_right", stride=2, name=f"ul_down_{s}")(uls[-1]))
            for _ in range(cfg.num_resnets):
                us.append(resnet(us[-1], None, "down"))
                uls.append(resnet(uls[-1], us[-1], "down_right"))
        u, ul = us.pop(), uls.pop()
        for s in reversed(range(cfg.num_stages)):
            if s < cfg.num_stages - 1:
                u = ShiftedDeconv(F, (2, 3), "down", name=f"u_up_{s}")(u)
                ul = ShiftedDeconv(F, (2, 2), "down_right", name=f"ul_up_{s}")(ul)
            for _ in range(cfg.num_resnets + (s < cfg.num_stages - 1)):
                u = resnet(u, us.pop(), "down")
                ul = resnet(ul, jnp.concatenate([u, uls.pop()], axis=-1), "down_right")
        return Dense(cfg.num_outputs, name="head")(nn.elu(ul)).astype(jnp.float32)


def _init_boxed(cfg: PixelCNNPPConfig, rng: Array) -> Any:
    """Boxed parameters: shapes and names from the modules, values `init_std * normal` from ONE random draw (a
    separate draw per parameter makes XLA compile the init for minutes on a CPU)."""
    h, w, c = cfg.token_shape
    boxed = jax.eval_shape(lambda: PixelCNNPP(cfg).init(jax.random.key(0), jnp.zeros((1, h, w, c), jnp.float32),
                                                        jnp.zeros((1,), jnp.int32))["params"])
    leaves = jax.tree_util.tree_leaves_with_path(boxed)
    sizes = [int(np.prod(x.shape)) for _, x in leaves]
    z = jnp.split(jax.random.normal(rng, (sum(sizes),)), np.cumsum(sizes)[:-1])
    values = [init_std(tuple(k.key for k in path if hasattr(k, "key")), x.shape) * zi.reshape(x.shape)
              for (path, x), zi in zip(leaves, z)]
    return jax.tree.unflatten(jax.tree.structure(boxed), values)
