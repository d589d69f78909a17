"""ImageGPT-style: a class-conditional transformer over k-means palette tokens of the 32x32 RGB shapes.

    python train.py --config configs/shapes_palette.py --workdir runs/shapes_palette

At the start of a new run the trainer fits a 32-colour palette (k-means in JAX, greedy k-means++ seeding from
`tokenizer.fit_seed`, on at most 100,000 training pixels) and saves it as `runs/shapes_palette/palette.npy`; a
resumed run and `ar_jax.load` read it back. One token per pixel (1,024 per image, a 32x32 grid: 2-D rope). Its
bits/dim are over the lossy palette tokens (per RGB dimension), not comparable with the pixel models' bits/dim.
Everything but the tokens and the model's grid is configs/shapes_pixels.py.
`configs/shapes_palette.py:smoke` shrinks everything for tests.
"""

import importlib.util
from pathlib import Path

import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("shapes_pixels", Path(__file__).with_name("shapes_pixels.py"))
    pixels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pixels)
    c = pixels.get_config(variant)
    c.tokenizer = ml_collections.ConfigDict()
    c.tokenizer.kind = "palette"  # one token per pixel: the id of its nearest palette colour (ImageGPT)
    c.tokenizer.palette_size = 32  # k-means clusters (the vocabulary)
    c.tokenizer.fit_seed = 0  # seeds k-means++ and the pixel sample
    c.tokenizer.fit_iters = 20  # Lloyd iterations
    c.model.rope = "2d"  # rotary embedding over the 32x32 token grid
    if variant == "smoke":
        c.tokenizer.palette_size = 6
    return c
