"""Medusa heads for the text-to-image run (configs/scenes_t2i.py), trained with the run itself frozen.

    nice -n 10 python train.py --config configs/scenes_t2i_medusa.py --workdir runs/scenes_t2i_medusa \
        --config.base_workdir=runs/scenes_t2i
    python sample.py --workdir runs/scenes_t2i_medusa --prompt "a red circle above a blue square" --out grid.png

The heads learn from the base run's own samples at its sampling settings (`ar_jax/training/medusa.py`); only the
heads are saved here, and `ar_jax.load(workdir)` gives the base run with them, sampling by Medusa decoding (exactly
the base run's distribution, fewer forward passes). `configs/scenes_t2i_medusa.py:smoke` shrinks it for tests.
"""

import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # seeds the distillation conditions, their samples and the batch order
    c.kind = "medusa"  # heads for a trained AR run (ar_jax/training/medusa.py)
    c.base_workdir = "runs/scenes_t2i"  # the trained AR run (read, never written)
    c.medusa = ml_collections.ConfigDict()
    c.medusa.num_heads = 4  # K: head i guesses the token i + 1 places after the model's next one
    c.medusa.sequential = True  # each head also reads the token before its own (Hydra); False: Medusa-1's heads
    c.medusa.width = 256  # hidden units of each head's residual block (0: the model's dim, Medusa-1's)
    c.medusa.num_samples = 4096  # base-run samples to learn from (drawn once at the start, sampling settings)
    c.medusa.sample_batch = 128  # images per sampling call while drawing them
    c.batch_size = 16  # samples per step (every position of each)
    c.num_train_steps = 2000  # optimizer steps
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 2e-3  # peak, after warm-up
    c.optimizer.warmup_steps = 50
    c.optimizer.end_learning_rate_fraction = 0.05  # cosine decays to this fraction of the peak
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.95
    c.optimizer.weight_decay = 0.0  # the projections start as the trained output head: no pull towards zero
    c.optimizer.grad_clip = 1.0  # global-norm clipping
    c.log_every = 100  # steps between metric lines in metrics.jsonl (loss, each head's NLL and top-1 agreement)
    c.checkpoint_every = 500  # steps between checkpoints (also saved at the end)
    if variant == "smoke":
        c.medusa.num_heads, c.medusa.num_samples, c.medusa.sample_batch = 2, 16, 8
        c.batch_size, c.num_train_steps, c.log_every, c.checkpoint_every = 8, 4, 2, 2
    elif variant is not None:
        raise ValueError(f"unknown variant {variant!r} of scenes_t2i_medusa; use 'smoke' or none.")
    return c
