"""Text-to-image: a transformer over the 8x8 codes of the scenes VQ tokenizer, the caption's tokens in front.

    python train.py --config configs/scenes_vq.py --workdir runs/scenes_vq
    python train.py --config configs/scenes_t2i.py --workdir runs/scenes_t2i --config.tokenizer.workdir=runs/scenes_vq
    python sample.py --workdir runs/scenes_t2i --prompt "a red circle above a blue square" --out grid.png
    python benchmarks/scene_eval.py --workdir runs/scenes_t2i

The prompt is tokenized by a SentencePiece model trained on the run's training captions when it starts (saved as
runs/scenes_t2i/text_tokenizer.model; `config.text.tokenizer` may name a .model file instead), left-padded to
`text.max_len` tokens, followed by a begin-image row (`ar_jax/models/conditions.py`). Captions are dropped (the
empty prompt) with probability `label_dropout`, so classifier-free guidance has its unconditional branch.
`configs/scenes_t2i.py:smoke` shrinks everything for tests (pair it with configs/scenes_vq.py:smoke).
"""

import importlib.util
from pathlib import Path

import ml_collections

from ar_jax.config import load_config_file


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    c = load_config_file(str(Path(__file__).with_name("shapes_ar.py")) + (f":{variant}" if variant else ""))
    c.unlock()
    vq = load_config_file(str(Path(__file__).with_name("scenes_vq.py")) + (f":{variant}" if variant else ""))
    c.data = _sibling("scenes_vq").scenes_data(variant)  # 20,000 training scenes (the tokenizer saw 10,000)

    c.tokenizer.workdir = "runs/scenes_vq"  # the VQ run's workdir (train it with configs/scenes_vq.py)
    c.tokenizer.codebook_size = vq.model.codebook_size  # expected codes (a tokenizer run that differs is refused)
    c.tokenizer.grid = (8, 8)  # expected code grid (rows, columns)

    c.model.condition = "text"  # the caption's tokens are the prefix (ar_jax/models/conditions.py)
    c.text = ml_collections.ConfigDict()
    c.text.tokenizer = ""  # "": train SentencePiece on the training captions at the start; or a .model file
    c.text.vocab_size = 256  # upper bound of the trained vocabulary (these captions need about 30 words)
    c.text.max_len = 10  # prompt tokens (longer prompts are refused, naming both lengths)
    c.text.sample_prompts = ("a red circle", "two green squares", "three blue triangles",
                             "a white square left of a yellow triangle", "a purple circle above a red square",
                             "a yellow circle")  # rows of samples.png (the last is a held-out pair)

    c.model.dim = 128  # residual width
    c.model.num_layers = 6  # deeper than shapes_ar: colours bind to shapes and shapes to places
    c.model.num_heads = 4
    c.model.num_kv_heads = 2
    c.model.mlp_dim = 384
    c.label_dropout = 0.1  # caption dropout: the empty prompt, for classifier-free guidance
    c.num_train_steps = 6000  # optimizer steps
    c.optimizer.learning_rate = 1e-3  # peak, after warm-up
    c.samples_per_class = 8  # columns of samples.png (one row per sample prompt)
    c.sampling.cfg_scale = 2.0  # classifier-free guidance (scene_eval: 2 beats 1.5 and 3)
    c.sampling.top_k = 8  # of 256 codes
    c.sampling.temperature = 0.8

    if variant == "smoke":
        c.model.dim, c.model.num_layers, c.model.num_heads, c.model.mlp_dim = 32, 2, 4, 64
        c.num_train_steps = 4
        c.text.sample_prompts = ("a red circle", "two blue squares")
        c.samples_per_class = 2
    elif variant is not None:
        raise ValueError(f"unknown variant {variant!r} of scenes_t2i; use 'smoke' or none.")
    return c
