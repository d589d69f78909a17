"""Feature extractors for sample-quality metrics, and cached reference statistics of real images.

Inception weights cannot be downloaded here, so the default extractor is our own small classifier,
trained on the dataset's real training images (deterministic from a seed, a few seconds on a CPU):
its penultimate layer gives the features (FID, precision/recall) and its logits the class probabilities
(Inception Score). A user's network plugs in as a callable (`from_callable`) or an MLP weights file
(`load_npz`). Metrics are comparable only under the same extractor: its `key` says which one it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ar_jax.evaluation.metrics import feature_stats

DEFAULT_CACHE_DIR = Path("~/.cache/ar_jax/ref_stats")

Features = tuple[np.ndarray, "np.ndarray | None"]  # features [N, D], logits [N, K] or None


@dataclasses.dataclass(frozen=True)
class FeatureExtractor:
    """uint8 images `[N, H, W, C]` -> (features `[N, D]`, logits `[N, K]` or None), in batches.

    `key` names the network's exact weights (a hash for weight-backed extractors); it keys the cache of
    reference statistics and is printed beside every metric so numbers under different extractors are
    never compared.
    """

    fn: Callable[[np.ndarray], Any]
    key: str
    batch_size: int = 500

    def __call__(self, images: np.ndarray) -> Features:
        images = np.asarray(images)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N, H, W, C], got {images.dtype} {images.shape}.")
        feats, logits = [], []
        for i in range(0, images.shape[0], self.batch_size):
            out = self.fn(images[i:i + self.batch_size])
            f, lg = out if isinstance(out, tuple) else (out, None)
            feats.append(np.asarray(f, np.float32).reshape(f.shape[0], -1))
            if lg is not None:
                logits.append(np.asarray(lg, np.float32))
        return np.concatenate(feats), (np.concatenate(logits) if logits else None)


def from_callable(fn: Callable[[np.ndarray], Any], key: str, batch_size: int = 500) -> FeatureExtractor:
    """A user's network: `fn(uint8 [B, H, W, C])` returns features `[B, D]` or `(features, logits [B, K])`.

    `key` must change whenever the network's weights do (e.g. a hash of its checkpoint): cached
    reference statistics are looked up by it.
    """
    if not key:
        raise ValueError("from_callable needs a non-empty key naming the network and its weights "
                         "(e.g. a hash of its checkpoint); cached reference statistics are keyed by it.")
    return FeatureExtractor(fn, key, batch_size)


# --- the classifier MLP: our default extractor, and the format of .npz weight files ---------------------


class ClassifierMLP(nn.Module):
    """Flattened pixels scaled to [-1, 1] -> GELU layers of widths `hidden` -> `num_classes` logits.

    Returns (features `[B, hidden[-1]]`, logits `[B, num_classes]`): features are the penultimate layer.
    """

    hidden: tuple[int, ...]
    num_classes: int

    @nn.compact
    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = images.reshape(images.shape[0], -1).astype(jnp.float32) / 127.5 - 1.0  # [B, H*W*C]
        for i, width in enumerate(self.hidden):
            x = nn.gelu(nn.Dense(width, name=f"layer_{i}")(x))
        return x, nn.Dense(self.num_classes, name=f"layer_{len(self.hidden)}")(x)


def weights_hash(params: Any) -> str:
    """sha256 (hex, 16 chars) of a parameter pytree's paths, shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(params)[0], key=lambda kv: str(kv[0])):
        leaf = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}:{leaf.shape}:{leaf.dtype}".encode())
        h.update(leaf.tobytes())
    return h.hexdigest()[:16]


@partial(jax.jit, static_argnames="model")
def _apply(model: ClassifierMLP, params: Any, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    return model.apply({"params": params}, images)


def mlp_extractor(params: Any, batch_size: int = 500) -> FeatureExtractor:
    """The extractor of a `ClassifierMLP` with `params` (`{"layer_i": {"kernel", "bias"}}`); shapes give its widths.

    Batches are padded to `batch_size`, so one compilation serves every call.
    """
    n = len(params)
    if set(params) != {f"layer_{i}" for i in range(n)} or n < 2:
        raise ValueError(f"MLP params must be layer_0..layer_K (K >= 1) of kernel/bias, got {sorted(params)}.")
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    model = ClassifierMLP(tuple(params[f"layer_{i}"]["kernel"].shape[1] for i in range(n - 1)),
                          params[f"layer_{n - 1}"]["kernel"].shape[1])
    in_dim = params["layer_0"]["kernel"].shape[0]

    def fn(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if int(np.prod(images.shape[1:])) != in_dim:
            raise ValueError(f"this extractor takes images of {in_dim} values, got shape {images.shape[1:]}; use "
                             "an extractor trained on this dataset.")
        b = images.shape[0]
        padded = np.concatenate([images, np.repeat(images[:1], batch_size - b, 0)]) if b < batch_size else images
        f, lg = _apply(model, params, padded)
        return np.asarray(f)[:b], np.asarray(lg)[:b]

    return FeatureExtractor(fn, f"mlp-{weights_hash(params)}", batch_size)


def save_npz(params: Any, path: str | Path) -> None:
    """Write `ClassifierMLP` params as an .npz with keys `layer_i/kernel` `[in, out]`, `layer_i/bias` `[out]`."""
    np.savez(path, **{f"{layer}/{name}": np.asarray(v) for layer, d in params.items() for name, v in d.items()})


def load_npz(path: str | Path, batch_size: int = 500) -> FeatureExtractor:
    """The extractor of an MLP weights file (`save_npz` format; layers GELU, the last one the logits head)."""
    with np.load(path) as f:
        params: dict[str, dict[str, np.ndarray]] = {}
        for name in f.files:
            layer, _, leaf = name.partition("/")
            if leaf not in ("kernel", "bias"):
                raise ValueError(f"{path}: key {name!r} is not 'layer_i/kernel' or 'layer_i/bias'.")
            params.setdefault(layer, {})[leaf] = f[name]
    return mlp_extractor(params, batch_size)


def train_classifier(images: np.ndarray, labels: np.ndarray, num_classes: int, seed: int = 0,
                     hidden: Sequence[int] = (256, 64), steps: int = 800, batch_size: int = 128,
                     learning_rate: float = 2e-3, weight_decay: float = 1e-4) -> dict[str, Any]:
    """`ClassifierMLP` params fitted to uint8 `images [N, H, W, C]` and `labels [N]` (AdamW, cosine decay).

    The whole loop is one jitted `lax.scan` over minibatches drawn from `seed`: the same seed gives the
    same weights on the same backend.
    """
    model = ClassifierMLP(tuple(hidden), num_classes)
    x, y = jnp.asarray(images), jnp.asarray(labels, jnp.int32)
    init_key, data_key = jax.random.split(jax.random.key(seed))
    params = model.init(init_key, x[:1])["params"]
    opt = optax.adamw(optax.cosine_decay_schedule(learning_rate, steps), weight_decay=weight_decay)

    def loss_fn(p: Any, idx: jax.Array) -> jax.Array:
        _, logits = model.apply({"params": p}, x[idx])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y[idx]).mean()

    def step(carry: Any, key: jax.Array) -> tuple[Any, None]:
        p, s = carry
        grads = jax.grad(loss_fn)(p, jax.random.randint(key, (batch_size,), 0, x.shape[0]))
        updates, s = opt.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), None

    @jax.jit
    def run(p: Any) -> Any:
        (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), jax.random.split(data_key, steps))
        return p

    return jax.tree.map(np.asarray, jax.device_get(run(params)))


def default_extractor(images: np.ndarray, labels: np.ndarray, num_classes: int, seed: int = 0) -> FeatureExtractor:
    """Our classifier trained on a dataset's real training `images [N, H, W, C]` / `labels [N]` (a few seconds)."""
    return mlp_extractor(train_classifier(images, labels, num_classes, seed))


def classifier_accuracy(extractor: FeatureExtractor, images: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of `images` whose extractor logits' argmax equals `labels [N]`."""
    _, logits = extractor(images)
    if logits is None:
        raise ValueError(f"extractor {extractor.key} gives no logits.")
    return float((logits.argmax(1) == np.asarray(labels)).mean())


# --- reference statistics, cached on disk ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReferenceStats:
    """Real-image statistics under one extractor: mu `[D]`, sigma `[D, D]`, features `[N, D]`, logits `[N, K]`."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray
    logits: np.ndarray | None


def images_hash(images: np.ndarray) -> str:
    """sha256 (hex, 16 chars) of an image array's shape, dtype and bytes."""
    images = np.ascontiguousarray(images)
    return hashlib.sha256(f"{images.shape}:{images.dtype}".encode() + images.tobytes()).hexdigest()[:16]


def reference_stats(extractor: FeatureExtractor, images: np.ndarray, name: str,
                    cache_dir: str | Path | None = None) -> ReferenceStats:
    """Statistics of real `images [N, H, W, C]` (e.g. `name="digits/train"`), computed once and then read back.

    Cached as `<cache_dir>/<name>-<hash>.npz`, the hash over the extractor's key, `name` and the images
    themselves; `cache_dir` defaults to `~/.cache/ar_jax/ref_stats`. Written atomically (temp file + rename).
    """
    cache_dir = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
    digest = hashlib.sha256(f"{extractor.key}|{name}|{images_hash(images)}".encode()).hexdigest()[:20]
    path = cache_dir / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}-{digest}.npz"
    if path.exists():
        with np.load(path) as f:
            logits = f["logits"] if "logits" in f.files else None
            return ReferenceStats(f["mu"], f["sigma"], f["features"], logits)
    features, logits = extractor(images)
    mu, sigma = feature_stats(features)
    stats = ReferenceStats(mu, sigma, features, logits)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, mu=mu, sigma=sigma, features=features, **({"logits": logits} if logits is not None else {}),
             extractor=extractor.key, name=name)
    os.replace(tmp, path)
    return stats
