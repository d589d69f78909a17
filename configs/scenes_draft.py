"""A small draft for speculative decoding with the text-to-image run (configs/scenes_t2i.py).

    python train.py --config configs/scenes_draft.py --workdir runs/scenes_draft \
        --config.tokenizer.workdir=runs/scenes_vq

Same data, codes, prompts and text tokenizer settings as configs/scenes_t2i.py (so it reads and writes the target's
sequences; its own SentencePiece model is trained on the same captions), a quarter of the width and a third of the
depth; then `speculative.generate(target..., draft..., k=4)` (benchmarks/generation_speed.py).
`configs/scenes_draft.py:smoke` shrinks everything for tests.
"""

from pathlib import Path

import ml_collections

from ar_jax.config import load_config_file


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    c = load_config_file(str(Path(__file__).with_name("scenes_t2i.py")) + (f":{variant}" if variant else ""))
    c.unlock()
    if variant is None:
        c.model.dim = 64  # residual width (the target's: 128)
        c.model.num_layers = 2  # (the target's: 6)
        c.model.num_heads = 2
        c.model.num_kv_heads = 1
        c.model.mlp_dim = 192  # SwiGLU hidden width
        c.num_train_steps = 3000  # optimizer steps
    return c
