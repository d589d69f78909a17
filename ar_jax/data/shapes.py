"""Procedural shapes: 32x32 RGB images of one bright shape on a dark plain background, labelled by shape.

Classes (label: shape): 0 circle, 1 square, 2 triangle, 3 plus, 4 ring. Each image draws a random shape
colour (bright, saturated), a random dark background colour, a random size and a random position, all from
`numpy.random.default_rng(seed)`, so a seed fixes the whole dataset. Train and test come from disjoint
streams of the same generator (the test set does not change with `num_train`). 5,500 images take well under
a second.

`shape_classifier(dataset)` is an independent judge of the classes (no learned image model): a
foreground mask, cropped to its bounding box and resized to 12x12, fed to a scikit-learn logistic
regression fitted on the real training images (and, by default, a blurred + noisy copy of them). It reads
pixels only, so it can grade generated samples.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from ar_jax.data.sources import ImageDataset, require

CLASSES = ("circle", "square", "triangle", "plus", "ring")
SIZE = 32  # image side, pixels
MIN_RADIUS, MAX_RADIUS = 5.0, 11.0  # half-size of a shape, pixels


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """h, s, v `[N]` in [0, 1] -> rgb `[N, 3]` in [0, 1]."""
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table[i, np.arange(len(h))]  # [N, 3]


def _masks(labels: np.ndarray, radius: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Boolean shape masks `[N, SIZE, SIZE]` for labels/radius/centre `[N]` (pixel centres at integers)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    r = radius[:, None, None]
    dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]  # [N, S, S]
    d2 = dx ** 2 + dy ** 2
    ax, ay = np.abs(dx), np.abs(dy)
    bar = 0.3 * r
    shapes = np.stack([
        d2 <= r ** 2,  # circle
        np.maximum(ax, ay) <= 0.85 * r,  # square
        (dy >= -r) & (dy <= 0.75 * r) & (ax <= (dy + r) / 1.75),  # triangle, apex up
        ((ax <= bar) & (ay <= r)) | ((ay <= bar) & (ax <= r)),  # plus
        (d2 <= r ** 2) & (d2 >= (0.55 * r) ** 2),  # ring
    ])  # [5, N, S, S]
    return shapes[labels, np.arange(len(labels))]


def generate(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` images uint8 `[n, 32, 32, 3]` and labels int32 `[n]` (balanced, shuffled) from `rng`."""
    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int32)
    radius = rng.uniform(MIN_RADIUS, MAX_RADIUS, n).astype(np.float32)
    cx = rng.uniform(radius, SIZE - 1 - radius).astype(np.float32)
    cy = rng.uniform(radius, SIZE - 1 - radius).astype(np.float32)
    fg = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.5, 1.0, n), rng.uniform(0.75, 1.0, n))  # [n, 3]
    bg = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.0, 1.0, n), rng.uniform(0.0, 0.3, n))
    mask = _masks(labels, radius, cx, cy)[..., None]  # [n, S, S, 1]
    images = np.where(mask, fg[:, None, None], bg[:, None, None])
    return np.round(images * 255).astype(np.uint8), labels


def shapes_dataset(num_train: int = 5000, num_test: int = 500, seed: int = 0) -> ImageDataset:
    """Train/test shapes: test from `SeedSequence(seed)`'s first child stream, train from its second."""
    if num_train < 1 or num_test < 1:
        raise ValueError(f"num_train={num_train} and num_test={num_test} must both be >= 1.")
    test_ss, train_ss = np.random.SeedSequence(seed).spawn(2)
    test_images, test_labels = generate(num_test, np.random.default_rng(test_ss))
    train_images, train_labels = generate(num_train, np.random.default_rng(train_ss))
    return ImageDataset(train_images, train_labels, test_images, test_labels, num_classes=len(CLASSES))


def from_config(data_config: ml_collections.ConfigDict) -> ImageDataset:
    """The source registered as "shapes": reads `config.data.{num_train, num_test, seed}`."""
    return shapes_dataset(int(require(data_config, "num_train")), int(require(data_config, "num_test")),
                          int(require(data_config, "seed")))


FEATURE_SIDE = 12  # the cropped foreground mask is resized to this many pixels per side


def shape_features(images: np.ndarray) -> np.ndarray:
    """uint8 `[N, H, W, 3]` -> float32 `[N, FEATURE_SIDE**2 + 1]`: the foreground mask in its bounding box
    (nearest-neighbour resized, so position and size drop out) and the fraction of the box it fills.

    Foreground: pixels farther (L1, RGB) than 96 from the median border colour.
    """
    x = np.asarray(images).astype(np.int32)
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)  # [N, 2H+2W, 3]
    bg = np.median(border, axis=1)  # [N, 3]
    fg = np.abs(x - bg[:, None, None]).sum(-1) > 96  # [N, H, W]
    out = np.zeros((len(x), FEATURE_SIDE ** 2 + 1), np.float32)
    for i, m in enumerate(fg):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if len(rows) == 0:
            continue
        box = m[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
        ri = (np.arange(FEATURE_SIDE) + 0.5) * box.shape[0] / FEATURE_SIDE
        ci = (np.arange(FEATURE_SIDE) + 0.5) * box.shape[1] / FEATURE_SIDE
        out[i, :-1] = box[ri.astype(int)][:, ci.astype(int)].ravel()
        out[i, -1] = box.mean()
    return out


def blur_and_noise(images: np.ndarray, rng: np.random.Generator, noise: float = 12.0) -> np.ndarray:
    """uint8 `[N, H, W, C]` -> a 3x3 box blur plus Gaussian noise (std `noise` grey levels), uint8."""
    x = np.pad(images.astype(np.float32), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = images.shape[1:3]
    blurred = sum(x[:, i: i + h, j: j + w] for i in range(3) for j in range(3)) / 9.0
    return np.clip(np.round(blurred + rng.normal(0.0, noise, blurred.shape)), 0, 255).astype(np.uint8)


def shape_classifier(dataset: ImageDataset, augment: bool = True) -> Any:
    """A scikit-learn classifier fitted on `dataset`'s train split; `.predict(shape_features(images))`.

    `augment`: also fit on a blurred, noisy copy of the training images (fixed seed), so soft edges and
    specks (as a decoder produces) do not change the verdict; no generated image is ever used.
    """
    from sklearn.linear_model import LogisticRegression

    features, labels = [shape_features(dataset.train_images)], [dataset.train_labels]
    if augment:
        features.append(shape_features(blur_and_noise(dataset.train_images, np.random.default_rng(0))))
        labels.append(dataset.train_labels)
    clf = LogisticRegression(max_iter=3000, C=1.0)
    return clf.fit(np.concatenate(features), np.concatenate(labels))


def classify(clf: Any, images: np.ndarray) -> np.ndarray:
    """Predicted class `[N]` of uint8 images `[N, H, W, 3]`."""
    return clf.predict(shape_features(images)).astype(np.int32)
