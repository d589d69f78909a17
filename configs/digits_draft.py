"""A small draft transformer on the 8x8 digits, for speculative decoding with the default digits run.

    python train.py --config configs/digits_draft.py --workdir runs/digits_draft

Same data, tokens and classes as configs/digits_pixels.py (so it reads and writes the target's sequences), a
quarter of its layers' width and half its depth; then
`speculative.generate(target.params, target.model_config, draft.params, draft.model_config, labels, rng, k=4)`.
`configs/digits_draft.py:smoke` shrinks everything for tests.
"""

from pathlib import Path

import ml_collections

from ar_jax.config import load_config_file


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    c = load_config_file(str(Path(__file__).with_name("digits_pixels.py")) + (f":{variant}" if variant else ""))
    c.unlock()
    if variant is None:
        c.model.dim = 64  # residual width (the target's: 128)
        c.model.num_layers = 2  # (the target's: 4)
        c.model.mlp_dim = 192  # SwiGLU hidden width
        c.num_train_steps = 1000  # optimizer steps
    return c
