"""Class-conditional PixelCNN++ (discretized logistic mixture, 32 -> 16 -> 8 -> 16 -> 32 shifted streams) on the
32x32 RGB shapes.

    python train.py --config configs/shapes_pixelcnn_pp.py --workdir runs/shapes_pixelcnn_pp

Data, tokens (16 levels per channel: logistic bins of width 2/15 on [-1, 1]) and optimisation are
configs/shapes_pixelcnn.py's, so its bits/dim compare with the other families' (`python benchmarks/likelihood.py`).
The model section is configs/digits_pixelcnn_pp.py's with three resolutions and a narrower width.
`configs/shapes_pixelcnn_pp.py:smoke` shrinks everything for tests.

Measured (idle 2 CPU cores, 600 steps of 8, 5 min 20 s of training): test bits/dim 0.286 (EMA), behind the plain
(0.182) and the gated (0.162) PixelCNN at the same steps: its raw weights swing at this learning rate (1.95
bits/dim at step 150, EMA 0.83), so the order the literature reports is not shown on shapes at this budget.
"""

import importlib.util
from pathlib import Path

import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("shapes_pixelcnn", Path(__file__).with_name("shapes_pixelcnn.py"))
    plain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plain)
    c = plain.base_config(variant)
    c.model = plain.sibling("digits_pixelcnn_pp").model_section(num_stages=3)
    c.model.features = 32  # channels of the u and ul streams
    c.model.num_resnets = 1  # gated resnet blocks per resolution in the down pass
    c.model.dropout = 0.0  # 5,000 images, few steps: no dropout
    if variant == "smoke":
        c.model.features, c.model.num_mixtures, c.model.num_stages = 8, 2, 2
    return c
