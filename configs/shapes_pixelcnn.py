"""Class-conditional plain PixelCNN (masked stack, mask A then B, R -> G -> B) on the 32x32 RGB shapes.

    python train.py --config configs/shapes_pixelcnn.py --workdir runs/shapes_pixelcnn

Data, tokens (16 levels per channel), sampling and mesh are configs/shapes_pixels.py's, so its bits/dim compare
with the transformer's, the Gated PixelCNN's (configs/shapes_gated_pixelcnn.py) and PixelCNN++'s
(configs/shapes_pixelcnn_pp.py): `python benchmarks/likelihood.py`. The model section is
configs/digits_pixelcnn.py's, narrower. `configs/shapes_pixelcnn.py:smoke` shrinks everything for tests.

The figures below predate the validation split: trained on all 5,000 images (the default now holds 500 out).
Measured (2 CPU cores, idle but for a minute of a benchmark; 1200 steps of 8: 6 min with evaluations, then the
final 3,072-step sample grid, which takes minutes more): test bits/dim 0.080 (EMA weights), by
benchmarks/likelihood.py (0.182 when the schedule ended at 600 steps).
"""

import importlib.util
from pathlib import Path

import ml_collections


def sibling(name: str):
    """The module of configs/<name>.py (configs is not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def base_config(variant: str | None) -> ml_collections.ConfigDict:
    """configs/shapes_pixels.py (same variant), unlocked, with the optimisation of the convolutional models."""
    c = sibling("shapes_pixels").get_config(variant)
    if variant != "smoke":
        c.batch_size, c.grad_accum_steps = 8, 1  # global batch, images; convolutions need no micro-batches
        c.num_train_steps = 1200  # optimizer steps (a CPU budget: 5-15 min of training for each pixel model)
        c.optimizer.learning_rate = 3e-3  # peak, after warm-up
        c.optimizer.warmup_steps = 15
        c.log_every, c.eval_every, c.checkpoint_every = 10, 150, 50
    return c


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    c = base_config(variant)
    c.model = sibling("digits_pixelcnn").model_section("pixelcnn")
    c.model.features = 48  # channels of each layer: 16 per colour channel
    c.model.embed_dim = 8  # input embedding per subpixel token
    c.model.dropout = 0.0  # 5,000 images, few steps: no dropout
    if variant == "smoke":
        c.model.features, c.model.num_layers = 12, 2
    return c
