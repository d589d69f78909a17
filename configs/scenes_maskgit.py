"""Text-to-image MaskGIT on the scenes codes: the transformer of configs/scenes_t2i.py made bidirectional.

    python train.py --config configs/scenes_maskgit.py --workdir runs/scenes_maskgit \
        --config.tokenizer.workdir=runs/scenes_vq

Same data, codes and prompts as configs/scenes_t2i.py; a [MASK] code, the cosine masking schedule and `steps`
parallel decoding iterations (ar_jax/models/maskgit.py). benchmarks/generation_speed.py compares it with the AR
run. `configs/scenes_maskgit.py:smoke` shrinks everything for tests.
"""

from pathlib import Path

import ml_collections

from ar_jax.config import load_config_file


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    c = load_config_file(str(Path(__file__).with_name("scenes_t2i.py")) + (f":{variant}" if variant else ""))
    c.unlock()
    c.model.family = "maskgit"  # the scenes_t2i transformer, bidirectional, codebook + [MASK]
    c.sampling.steps = 10  # parallel decoding iterations (MaskGIT uses 8-12; at most the 64 codes)
    c.sampling.choice_temperature = 4.5  # Gumbel noise on the confidences, annealed to 0 over the steps
    return c
