"""A small draft transformer over the shapes VQ codes, for speculative decoding with configs/shapes_ar.py.

    python train.py --config configs/shapes_draft.py --workdir runs/shapes_draft \
        --config.tokenizer.workdir=runs/shapes_vq

Same tokenizer, codes and classes as configs/shapes_ar.py (so it reads and writes the target's sequences), half
its width and depth. `configs/shapes_draft.py:smoke` shrinks everything for tests.
"""

from pathlib import Path

import ml_collections

from ar_jax.config import load_config_file


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    c = load_config_file(str(Path(__file__).with_name("shapes_ar.py")) + (f":{variant}" if variant else ""))
    c.unlock()
    if variant is None:
        c.model.dim = 64  # residual width (the target's: 128)
        c.model.num_layers = 2  # (the target's: 4)
        c.model.mlp_dim = 192  # SwiGLU hidden width
        c.num_train_steps = 1200  # optimizer steps
    return c
