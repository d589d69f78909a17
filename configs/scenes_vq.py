"""A VQ tokenizer (32x32 RGB -> 8x8 codes from 256) on the captioned procedural scenes (no download).

    python train.py --config configs/scenes_vq.py --workdir runs/scenes_vq

Then configs/scenes_t2i.py trains a text-to-image prior on its codes (`--config.tokenizer.workdir=runs/scenes_vq`).
The architecture and optimiser are configs/shapes_vq.py's, with 256 codes (six colours of three shapes at every
offset in a 4x4 cell). `configs/scenes_vq.py:smoke` shrinks everything for tests.
"""

from pathlib import Path

import ml_collections

from ar_jax.config import load_config_file


def scenes_data(variant: str | None = None) -> ml_collections.ConfigDict:
    """`config.data` of every scenes run (the tokenizer's and the priors' share it)."""
    d = ml_collections.ConfigDict()
    d.name = "scenes"  # captioned procedural scenes (ar_jax/data/scenes.py)
    d.image_shape = (32, 32, 3)  # H, W, C (checked against the data)
    d.image_size = 32  # side of the generated images, pixels (shapes scale with it)
    d.num_classes = 0  # no class labels: the condition is the caption
    d.num_train = 20000  # generated training images
    d.num_test = 1000  # generated test images (a fixed split, independent of num_train)
    d.seed = 0  # seeds the generated dataset (not the training)
    d.held_out = ("purple triangle", "yellow circle")  # colour-shape pairs never in a training image
    d.kind_weights = (1.0, 1.0, 1.0)  # how often captions are single / counted / relation scenes
    if variant == "smoke":
        d.num_train, d.num_test = 64, 16
    return d


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    c = load_config_file(str(Path(__file__).with_name("shapes_vq.py")) + (f":{variant}" if variant else ""))
    c.unlock()
    c.data = scenes_data(variant)
    if variant is None:
        c.data.num_train = 10000  # the tokenizer needs fewer images than the prior
        c.model.codebook_size = 256  # number of codes (the prior's vocabulary)
        c.num_train_steps = 1500  # optimizer steps
    elif variant != "smoke":
        raise ValueError(f"unknown variant {variant!r} of scenes_vq; use 'smoke' or none.")
    return c
