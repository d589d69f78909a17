"""Class-conditional plain PixelCNN (masked 3x3 stack, mask A then B) on the 8x8 digits (embedded, no download).

    python train.py --config configs/digits_pixelcnn.py --workdir runs/digits_pixelcnn

The plain stack has a blind spot (see configs/digits_gated_pixelcnn.py for the fix); everything but the model
section is configs/digits_pixels.py. `configs/digits_pixelcnn.py:smoke` shrinks everything for tests.
"""

from pathlib import Path

import ml_collections

from ar_jax.config import load_config_file


def base_config(variant: str | None) -> ml_collections.ConfigDict:
    """configs/digits_pixels.py (same variant), unlocked for overrides."""
    spec = str(Path(__file__).with_name("digits_pixels.py")) + (f":{variant}" if variant else "")
    c = load_config_file(spec)
    c.unlock()
    return c


def model_section(kind: str) -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.family = "pixelcnn"  # model family (ar_jax/models/pixelcnn.py)
    m.kind = kind  # "pixelcnn": plain masked stack; "gated": vertical + horizontal gated stacks
    m.features = 64  # channels of each layer (a multiple of the image's channels)
    m.num_layers = 6  # masked layers, the first of type A
    m.kernel_size = 3  # odd; kernel of layers 2..L
    m.first_kernel_size = 5  # odd; kernel of the mask-A first layer
    m.embed_dim = 16  # input embedding per subpixel token
    m.dropout = 0.1  # on each layer's output (training only)
    return m


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    c = base_config(variant)
    c.model = model_section("pixelcnn")
    if variant == "smoke":
        c.model.features, c.model.num_layers = 16, 2
    return c
