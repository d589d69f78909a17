"""ImageGPT's palette tokens: k-means over RGB pixels; one token (a cluster id) per pixel in raster order.

`fit_palette` runs k-means in JAX: greedy k-means++ (or uniform random) initialisation from a seed, then Lloyd
iterations as one jitted `lax.scan`, recording the distortion (mean squared distance to the nearest centroid)
before each update, which Lloyd's algorithm never increases. `PaletteTokenizer` has PixelTokenizer's
interface: uint8 images `[B, H, W, C]` <-> tokens `[B, H*W]`, decoding a token to its centroid's colour.
A run's palette lives in its workdir (`palette.npy`): `train.py` fits it at the start of a new run, and
`make_tokenizer` / `ar_jax.load` read it back.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ar_jax.tokenizers.pixels import check_images

Array = jax.Array
PALETTE_FILE = "palette.npy"  # in the run's workdir


def sq_distances(x: Array, centroids: Array) -> Array:
    """Squared Euclidean distances `[N, K]` of points `x [N, C]` to `centroids [K, C]`."""
    return jnp.maximum((x * x).sum(-1, keepdims=True) - 2 * x @ centroids.T + (centroids * centroids).sum(-1), 0.0)


def kmeans_plus_plus(x: Array, k: int, rng: Array) -> Array:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii; scikit-learn's greedy variant): each step draws
    `2 + log k` candidates with probability ~ D(x)^2 and keeps the one that lowers the distortion most. `[k, C]`."""
    n, trials = x.shape[0], 2 + int(math.log(k))
    first = x[jax.random.randint(jax.random.fold_in(rng, 0), (), 0, n)]
    cents = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)
    d2 = ((x - first) ** 2).sum(-1)

    def body(i, carry):
        cents, d2 = carry
        p = jnp.where(d2.sum() > 0, d2, 1.0)  # all points already centroids: pick uniformly
        cand = x[jax.random.categorical(jax.random.fold_in(rng, i), jnp.log(p), shape=(trials,))]  # [L, C]
        new_d2 = jnp.minimum(d2[None], sq_distances(x, cand).T)  # [L, N]
        best = jnp.argmin(new_d2.sum(-1))
        return cents.at[i].set(cand[best]), new_d2[best]

    return jax.lax.fori_loop(1, k, body, (cents, d2))[0]


@functools.partial(jax.jit, static_argnames=("k", "iters", "init"))
def kmeans(x: Array, rng: Array, *, k: int, iters: int, init: str = "kmeans++") -> tuple[Array, Array]:
    """Centroids `[k, C]` and the distortion before each Lloyd update `[iters]` of points `x [N, C]` float32.

    A cluster that loses all its points keeps its centroid (so the distortion still cannot rise).
    """
    if init == "kmeans++":
        cents = kmeans_plus_plus(x, k, rng)
    else:
        cents = x[jax.random.choice(rng, x.shape[0], (k,), replace=False)]

    def lloyd(cents, _):
        d2 = sq_distances(x, cents)  # [N, k]
        assign = jax.nn.one_hot(jnp.argmin(d2, -1), k, dtype=x.dtype)  # [N, k]
        counts = assign.sum(0)
        means = (assign.T @ x) / jnp.maximum(counts, 1.0)[:, None]
        new = jnp.where(counts[:, None] > 0, means, cents)
        return new, d2.min(-1).mean()

    return jax.lax.scan(lloyd, cents, None, length=iters)


def fit_palette(images: np.ndarray, k: int, seed: int = 0, iters: int = 20, init: str = "kmeans++",
                max_pixels: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Palette `[k, C]` float32 (0..255) of uint8 `images [..., C]` and the distortion per iteration `[iters]`.

    At most `max_pixels` pixels, drawn with `seed`, enter k-means (ImageGPT fits on a sample too).
    """
    if init not in ("kmeans++", "random"):
        raise ValueError(f"init={init!r} must be 'kmeans++' or 'random'.")
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"images have dtype {images.dtype}; pass uint8 values in 0..255.")
    x = images.reshape(-1, images.shape[-1]).astype(np.float32)
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k={k} must be in [1, {x.shape[0]}] (the number of pixels given).")
    if x.shape[0] > max_pixels:
        x = x[np.random.default_rng(seed).choice(x.shape[0], max_pixels, replace=False)]
    cents, distortion = kmeans(jnp.asarray(x), jax.random.key(seed), k=int(k), iters=int(iters), init=init)
    return np.asarray(cents), np.asarray(distortion)


@dataclasses.dataclass(frozen=True, eq=False)
class PaletteTokenizer:
    """uint8 images `[B, H, W, C]` <-> tokens `[B, H*W]`: each pixel's nearest palette colour."""

    image_shape: tuple[int, int, int]
    palette: np.ndarray  # [K, C] float32 centroid colours in 0..255

    @classmethod
    def fit(cls, images: np.ndarray, k: int, seed: int = 0, iters: int = 20, init: str = "kmeans++"
            ) -> PaletteTokenizer:
        """k-means palette of `images [N, H, W, C]` uint8."""
        images = np.asarray(images)
        return cls(tuple(images.shape[1:]), fit_palette(images, k, seed, iters, init)[0])

    @property
    def vocab_size(self) -> int:
        return int(self.palette.shape[0])

    @property
    def seq_len(self) -> int:
        h, w, _ = self.image_shape
        return h * w

    @property
    def grid(self) -> tuple[int, int]:
        """The token grid (rows, tokens per row)."""
        return self.image_shape[0], self.image_shape[1]

    def check_images(self, images: np.ndarray) -> np.ndarray:
        return check_images(images, self.image_shape)

    def save(self, workdir: str | Path) -> Path:
        """Write the palette to `workdir/palette.npy` (float32 `[K, C]`)."""
        path = Path(workdir) / PALETTE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.asarray(self.palette, np.float32))
        return path

    @classmethod
    def load(cls, workdir: str | Path, image_shape: tuple[int, int, int], k: int) -> PaletteTokenizer:
        """The palette a run saved in `workdir/palette.npy`, checked against `k` colours of `image_shape[2]`
        channels."""
        path = Path(workdir) / PALETTE_FILE if workdir is not None else None
        if path is None or not path.is_file():
            raise ValueError(f"{path or PALETTE_FILE!r} is missing: this run's tokens are palette ids "
                             "(config.tokenizer.kind='palette'), and train.py writes the palette into the workdir at "
                             "the start of a run. Pass the run's workdir, train it first, or restore the file.")
        palette = np.load(path)
        if palette.shape != (k, image_shape[2]):
            raise ValueError(f"{path} holds a palette of shape {palette.shape}, but the config asks for "
                             f"config.tokenizer.palette_size={k} colours of {image_shape[2]} channels; use the "
                             "workdir this config was trained in.")
        return cls(tuple(image_shape), palette.astype(np.float32))

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Tokens `[B, H*W]` int32: the id of each pixel's nearest palette colour."""
        images = self.check_images(images)
        x = jnp.asarray(images.reshape(-1, images.shape[-1]), jnp.float32)
        ids = jnp.argmin(sq_distances(x, jnp.asarray(self.palette, jnp.float32)), -1)
        return np.asarray(ids, np.int32).reshape(images.shape[0], -1)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """uint8 images `[B, H, W, C]`: each token's palette colour."""
        tokens = np.asarray(tokens)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"tokens must be in [0, vocab_size={self.vocab_size}), got "
                             f"{tokens.min()}..{tokens.max()}.")
        colours = np.clip(np.round(self.palette), 0, 255).astype(np.uint8)[tokens]
        return colours.reshape(tokens.shape[0], *self.image_shape)
