"""Image sources behind one interface: uint8 images `[N, H, W, C]` with int labels (and captions), fixed splits."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """Train and test images (uint8 `[N, H, W, C]`), labels (int32 `[N]`) and, for captioned sources, captions
    (one str per image; None for sources without captions)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    train_captions: tuple[str, ...] | None = None
    test_captions: tuple[str, ...] | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])


DIGITS_TEST_SIZE = 297


def digits() -> ImageDataset:
    """scikit-learn's 8x8 digits (ships with the package): 17 grey levels v -> round(v * 255 / 16).

    Fixed split in sklearn's order: the last 297 images are the test set.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * 255.0 / 16.0).astype(np.uint8)[..., None]  # [1797, 8, 8, 1]
    labels = d.target.astype(np.int32)
    n = len(images) - DIGITS_TEST_SIZE
    return ImageDataset(images[:n], labels[:n], images[n:], labels[n:], num_classes=10)


def require(data_config: ml_collections.ConfigDict, key: str, allow_none: bool = False) -> Any:
    """`config.data.<key>`, or a ValueError naming the field and the source that needs it."""
    if key not in data_config or (data_config[key] is None and not allow_none):
        source = data_config["name"] if "name" in data_config else None
        raise ValueError(f"config.data.{key} is required for name={source!r}; add it to config.data in "
                         f"the config file (or set it with --config.data.{key}=... if the file has it).")
    return data_config[key]


MODES = {1: "L", 3: "RGB"}  # PIL mode of the images for each channel count


def image_size_and_mode(data_config: ml_collections.ConfigDict) -> tuple[int, int, str]:
    """`(H, W, PIL mode)` from `config.data.image_shape` (H, W, C with C = 1 or 3)."""
    shape = tuple(require(data_config, "image_shape"))
    if len(shape) != 3 or shape[2] not in MODES or min(shape) < 1:
        raise ValueError(f"config.data.image_shape={shape} must be (H, W, C) with C = 1 (grey) or 3 (RGB).")
    return int(shape[0]), int(shape[1]), MODES[shape[2]]


def fit_image(image: Image.Image, height: int, width: int, mode: str) -> np.ndarray:
    """`image` converted to `mode`, resized (shorter side, bicubic) and centre-cropped -> uint8 `[H, W, C]`.

    ADM's `center_crop_arr` (LlamaGen's ImageNet preprocessing) generalised to non-square targets: first
    halve with a box filter while the image stays at least twice the target, then bicubic. For a square
    target it gives exactly `center_crop_arr`'s pixels. An image already `mode` and `height` x `width` is
    returned unchanged (no resampling).
    """
    if image.mode != mode:
        image = image.convert(mode)
    w, h = image.size
    while h >= 2 * height and w >= 2 * width:
        image = image.resize((w // 2, h // 2), Image.Resampling.BOX)
        w, h = image.size
    if (h, w) != (height, width):
        scale = max(height / h, width / w)  # the smallest size that covers the target in both directions
        rh, rw = max(height, round(h * scale)), max(width, round(w * scale))
        image = image.resize((rw, rh), Image.Resampling.BICUBIC)
        top, left = (rh - height) // 2, (rw - width) // 2
        image = image.crop((left, top, left + width, top + height))
    arr = np.asarray(image, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _folder(data_config: ml_collections.ConfigDict) -> ImageDataset:
    from ar_jax.data.folder import folder_dataset

    return folder_dataset(data_config)


def _caption_folder(data_config: ml_collections.ConfigDict) -> ImageDataset:
    from ar_jax.data.folder import caption_folder_dataset

    return caption_folder_dataset(data_config)


def _scenes(data_config: ml_collections.ConfigDict) -> ImageDataset:
    from ar_jax.data.scenes import from_config

    return from_config(data_config)


def _shapes(data_config: ml_collections.ConfigDict) -> ImageDataset:
    from ar_jax.data.shapes import from_config

    return from_config(data_config)


def _tfds(data_config: ml_collections.ConfigDict) -> ImageDataset:
    from ar_jax.data.tfds_source import tfds_dataset

    return tfds_dataset(data_config)


SOURCES: dict[str, Callable[[ml_collections.ConfigDict], ImageDataset]] = {
    "caption_folder": _caption_folder,  # ar_jax/data/folder.py: images with captions (captions.jsonl or .txt)
    "digits": lambda data_config: digits(),  # no fields of its own
    "folder": _folder,  # ar_jax/data/folder.py: one subfolder per class
    "scenes": _scenes,  # ar_jax/data/scenes.py: procedural captioned scenes (num_train, num_test, seed, ...)
    "shapes": _shapes,  # ar_jax/data/shapes.py: procedural 32x32 RGB shapes (num_train, num_test, seed)
    "tfds": _tfds,  # ar_jax/data/tfds_source.py: tensorflow-datasets by name
}


def get_dataset(data_config: ml_collections.ConfigDict) -> ImageDataset:
    """The dataset `config.data` describes: `config.data.name` picks the source, which reads its own fields."""
    name = require(data_config, "name")
    if name not in SOURCES:
        raise ValueError(f"config.data.name={name!r} is not a known source; choose one of {sorted(SOURCES)}.")
    return SOURCES[name](data_config)
