"""Class-conditional Gated PixelCNN (vertical + horizontal stacks, no blind spot) on the 8x8 digits (no download).

    python train.py --config configs/digits_gated_pixelcnn.py --workdir runs/digits_gated

Everything but the model section and the schedule is configs/digits_pixels.py; the model section and the schedule
(600 steps of 32, the best checkpoint by validation bits/dim) are configs/digits_pixelcnn.py's, with kind="gated".
`configs/digits_gated_pixelcnn.py:smoke` shrinks it for tests.

Tried, 600 steps (validation / test bits/dim, EMA, at the best step): dropout 0.1 1.699 / 1.725 (this config), 0.3
1.701 / 1.716, 0.5 1.734 / 1.742; dropout 0.3 with 800 steps 1.667 / 1.698. The validation split prefers longer
runs than the test split does (see configs/digits_pixelcnn.py).
"""

import importlib.util
from pathlib import Path

import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("digits_pixelcnn", Path(__file__).with_name("digits_pixelcnn.py"))
    plain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plain)
    c = plain.get_config(variant)
    c.model.kind = "gated"  # vertical + horizontal gated stacks, class-conditioned
    return c
