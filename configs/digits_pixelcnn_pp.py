"""Class-conditional PixelCNN++ (discretized logistic mixture, down/up-sampling shifted streams) on the 8x8 digits.

    python train.py --config configs/digits_pixelcnn_pp.py --workdir runs/digits_pixelcnn_pp

Everything but the model section and the schedule is configs/digits_pixels.py (17 grey levels: the logistic's
bins have width 2/16 on [-1, 1]); the schedule (600 steps of 32, the best checkpoint by validation bits/dim) is
configs/digits_pixelcnn.py's. Dropout 0.5 in the gated resnets, as PixelCNN++ used on CIFAR-10: with 0.1 and
1,500 steps it overfit the 1,500 training digits (test bits/dim 1.688 at step 500, 2.648 at 1500; issue 31).
`python benchmarks/likelihood.py` compares its test bits/dim with the other families'.
`configs/digits_pixelcnn_pp.py:smoke` shrinks everything for tests.

Tried with dropout 0.5 (validation / test bits/dim, EMA, at the best step): 600 steps 1.622 / 1.695 (this config);
500 steps 1.636 / 1.694; 1000 steps 1.605 / 1.698 (its step 700; 1.615 / 1.735 at 1000); 600 steps with features 32
1.678 / 1.714, with learning rate 1e-3 1.645 / 1.706, with weight decay 1.0 1.618 / 1.692.
"""

import importlib.util
from pathlib import Path

import ml_collections

from ar_jax.config import load_config_file


def model_section(num_stages: int) -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.family = "pixelcnn_pp"  # model family (ar_jax/models/pixelcnn_pp.py)
    m.features = 64  # channels of the u and ul streams
    m.num_resnets = 2  # gated resnet blocks per resolution in the down pass (one more after each upsampling)
    m.num_stages = num_stages  # resolutions (each halves the grid; H and W divisible by 2**(num_stages-1))
    m.num_mixtures = 5  # logistic components per pixel
    m.dropout = 0.5  # inside each gated resnet block (training only); PixelCNN++'s on CIFAR-10
    return m


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    spec = str(Path(__file__).with_name("digits_pixels.py")) + (f":{variant}" if variant else "")
    c = load_config_file(spec)
    c.unlock()
    c.model = model_section(num_stages=2)  # 8x8 then 4x4
    sibling = importlib.util.spec_from_file_location("digits_pixelcnn", Path(__file__).with_name("digits_pixelcnn.py"))
    plain = importlib.util.module_from_spec(sibling)
    sibling.loader.exec_module(plain)
    plain.schedule(c, variant)  # 600 steps of 32, evaluated every 100
    if variant == "smoke":
        c.model.features, c.model.num_resnets, c.model.num_mixtures = 8, 1, 2
    return c
