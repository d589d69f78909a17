"""Image sources behind one interface: uint8 images `[N, H, W, C]` with int labels, fixed splits."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """Train and test images (uint8 `[N, H, W, C]`) and labels (int32 `[N]`)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int

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


def require(data_config: ml_collections.ConfigDict, key: str) -> Any:
    """`config.data.<key>`, or a ValueError naming the field and the source that needs it."""
    if key not in data_config or data_config[key] is None:
        raise ValueError(f"config.data.{key} is required for name={data_config.name!r}; set it in the config or "
                         f"with --config.data.{key}=...")
    return data_config[key]


SOURCES: dict[str, Callable[[ml_collections.ConfigDict], ImageDataset]] = {
    "digits": lambda data_config: digits(),
}


def get_dataset(data_config: ml_collections.ConfigDict) -> ImageDataset:
    """The dataset `config.data` describes (`config.data.name` picks the source, which reads its own fields)."""
    name = data_config.name
    if name not in SOURCES:
        raise ValueError(f"config.data.name={name!r} is not a known source; choose one of {sorted(SOURCES)}.")
    return SOURCES[name](data_config)
