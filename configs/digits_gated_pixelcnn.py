"""Class-conditional Gated PixelCNN (vertical + horizontal stacks, no blind spot) on the 8x8 digits (no download).

    python train.py --config configs/digits_gated_pixelcnn.py --workdir runs/digits_gated

Everything but the model section is configs/digits_pixels.py; the model section is the one of
configs/digits_pixelcnn.py with kind="gated". `configs/digits_gated_pixelcnn.py:smoke` shrinks it for tests.
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
