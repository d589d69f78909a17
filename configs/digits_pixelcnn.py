"""Class-conditional plain PixelCNN (masked 3x3 stack, mask A then B) on the 8x8 digits (embedded, no download).

    python train.py --config configs/digits_pixelcnn.py --workdir runs/digits_pixelcnn

The plain stack has a blind spot (see configs/digits_gated_pixelcnn.py for the fix); everything but the model
section and the schedule is configs/digits_pixels.py. `configs/digits_pixelcnn.py:smoke` shrinks everything for tests.

The three digits pixel-family configs (this one, digits_gated_pixelcnn.py, digits_pixelcnn_pp.py) share one
schedule, `schedule()`: 600 steps of 32, evaluated every 100, the checkpoint with the lowest validation bits/dim
kept (`ar_jax.load` reads it). With 1,500 steps, the digits_pixels.py schedule, Gated and PixelCNN++ overfit the
1,500 training digits: test bits/dim 1.704 -> 1.862 and 1.688 -> 2.648 from step 500 to 1500 (issue 31). 600 is
where PixelCNN++'s validation bits/dim flattens (a 1,000-step schedule: 1.610 at 600, 1.605 at 700, then rising)
and keeps its run at a few minutes on 2 CPU cores. The validation split (random, same writers as training) keeps
improving after the test split (other writers) has turned, so it stops runaway overfitting but picks late.
Tried for this plain stack, 600 steps (validation / test bits/dim, EMA, at the best step): dropout 0.1 1.793 /
1.786 (this config), 0.5 1.854 / 1.825; with 800 steps 1.765 / 1.774, with 1000 1.753 / 1.774 (its step 900).
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


def schedule(c: ml_collections.ConfigDict, variant: str | None) -> None:
    """The three digits pixel-family configs' shared schedule (the smoke variant keeps digits_pixels.py's)."""
    if variant != "smoke":
        c.num_train_steps = 600  # optimizer steps (1,500 overfit the 1,350 training digits)
        c.eval_every = 100  # steps between test and validation evaluations (each a candidate best checkpoint)
        c.checkpoint_every = 100  # steps between checkpoints (also saved at the end)


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    c = base_config(variant)
    c.model = model_section("pixelcnn")
    schedule(c, variant)
    if variant == "smoke":
        c.model.features, c.model.num_layers = 16, 2
    return c
