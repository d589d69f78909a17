"""Class-conditional MaskGIT over the 8x8 codes of a trained shapes VQ tokenizer (two-stage, like shapes_ar).

    python train.py --config configs/shapes_vq.py --workdir runs/shapes_vq
    python train.py --config configs/shapes_maskgit.py --workdir runs/shapes_maskgit \
        --config.tokenizer.workdir=runs/shapes_vq

The transformer of configs/shapes_ar.py made bidirectional with a [MASK] code, trained with the cosine masking
schedule and decoded in `steps` parallel iterations (ar_jax/models/maskgit.py); metrics report
`masked_bits_per_token`. `python benchmarks/vq_quality.py --vq_workdir runs/shapes_vq --ar_workdir
runs/shapes_maskgit` judges its samples. `configs/shapes_maskgit.py:smoke` shrinks everything for tests (pair it
with configs/shapes_vq.py:smoke).
"""

from pathlib import Path

import ml_collections

from ar_jax.config import load_config_file


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    c = load_config_file(str(Path(__file__).with_name("shapes_ar.py")) + (f":{variant}" if variant else ""))
    c.unlock()
    c.model.family = "maskgit"  # the shapes_ar transformer, bidirectional, codebook + [MASK]
    c.num_train_steps = 1500 if variant is None else c.num_train_steps  # optimizer steps
    c.sampling.steps = 10  # parallel decoding iterations (MaskGIT uses 8-12; at most the 64 codes)
    c.sampling.choice_temperature = 4.5  # Gumbel noise on the confidences, annealed to 0 over the steps
    return c
