"""Pixel tokens: one token per (sub)pixel in raster order, `levels` evenly spaced grey/colour values."""

from __future__ import annotations

import dataclasses

import numpy as np


def check_images(images: np.ndarray, image_shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 images `[B, *image_shape]` (a missing single channel axis is added), or ValueError naming the fix."""
    images = np.asarray(images)
    if images.ndim == 3 and image_shape[2] == 1:
        images = images[..., None]
    if images.shape[1:] != tuple(image_shape):
        want = ", ".join(map(str, image_shape))
        raise ValueError(f"images have shape {images.shape}; this model takes uint8 images [B, {want}].")
    if images.dtype != np.uint8:
        raise ValueError(f"images have dtype {images.dtype}; pass uint8 values in 0..255.")
    return images


@dataclasses.dataclass(frozen=True)
class PixelTokenizer:
    """uint8 images `[B, H, W, C]` <-> tokens `[B, H*W*C]` with value v <-> token round(v*(levels-1)/255)."""

    image_shape: tuple[int, int, int]
    levels: int = 256

    @property
    def vocab_size(self) -> int:
        return self.levels

    @property
    def seq_len(self) -> int:
        h, w, c = self.image_shape
        return h * w * c

    @property
    def grid(self) -> tuple[int, int]:
        """The token grid (rows, tokens per row)."""
        h, w, c = self.image_shape
        return h, w * c

    def check_images(self, images: np.ndarray) -> np.ndarray:
        return check_images(images, self.image_shape)

    def encode(self, images: np.ndarray) -> np.ndarray:
        images = self.check_images(images)
        tokens = np.round(images.astype(np.float64) * (self.levels - 1) / 255.0).astype(np.int32)
        return tokens.reshape(images.shape[0], -1)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens)
        values = np.round(tokens.astype(np.float64) * 255.0 / (self.levels - 1)).astype(np.uint8)
        return values.reshape(tokens.shape[0], *self.image_shape)
