"""Class-conditional MaskGIT on the 8x8 digits: the digits transformer made bidirectional, with a [MASK] token.

    python train.py --config configs/digits_maskgit.py --workdir runs/digits_maskgit

Trained with the cosine masking schedule (cross-entropy on masked pixels only) and decoded in `steps` parallel
iterations (ar_jax/models/maskgit.py). Its metrics report `masked_bits_per_token` (no exact likelihood, so no
bits/dim). Everything but the model family, the step count and the decoding settings is configs/digits_pixels.py.
`configs/digits_maskgit.py:smoke` shrinks everything for tests.
"""

from pathlib import Path

import ml_collections

from ar_jax.config import load_config_file


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    c = load_config_file(str(Path(__file__).with_name("digits_pixels.py")) + (f":{variant}" if variant else ""))
    c.unlock()
    c.model.family = "maskgit"  # the digits transformer, bidirectional, vocabulary + [MASK]
    c.num_train_steps = 1200 if variant is None else c.num_train_steps  # optimizer steps
    c.sampling.steps = 10  # parallel decoding iterations (MaskGIT uses 8-12; at most the 64 tokens)
    c.sampling.choice_temperature = 4.5  # Gumbel noise on the confidences, annealed to 0 over the steps
    return c
