"""Image grids: tile uint8 images `[N, H, W, C]` into one picture and write PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_grid(images: np.ndarray, rows: int, pad: int = 1, scale: int = 1) -> np.ndarray:
    """`[rows * cols, H, W, C]` uint8 -> one `[rows*(H+pad)+pad, cols*(W+pad)+pad, C]` picture."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    cols = -(-n // rows)
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = img
    return grid


def save_png(image: np.ndarray, path: str | Path) -> None:
    """Write `[H, W, C]` uint8 (C = 1 or 3) as PNG, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = image[..., 0] if image.shape[-1] == 1 else image
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(arr).save(tmp, format="PNG")
    tmp.replace(path)


def grid_for_display(images: np.ndarray, rows: int) -> np.ndarray:
    """Tile; small images are scaled up so that a grid of 8x8 digits is readable."""
    return make_grid(images, rows, scale=max(1, 64 // images.shape[1]))


def save_grid(images: np.ndarray, rows: int, path: str | Path) -> None:
    """Tile (scaled for display) and write a PNG."""
    save_png(grid_for_display(images, rows), path)
