"""Class-conditional pixel transformer on scikit-learn's 8x8 digits (embedded, no download).

    python train.py --config configs/digits_pixels.py --workdir runs/digits

Trains in about 5.5 minutes on 2 CPU cores (test bits/dim about 1.68-1.72) and writes runs/digits/samples.png
(one row per class). 10% of the training digits are held out for validation; `ar_jax.load` reads the checkpoint
with the lowest validation bits/dim (step 1,250 of 1,500 in a run on a Zen 4 EPYC: test 1.683, 1.698 at 1,500).
`configs/digits_pixels.py:smoke` shrinks everything for tests.
"""

import common
import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # seeds init, data order, dropout and the final sample grid
    c.kind = "ar"  # "ar": a transformer prior over tokens

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"  # image source (ar_jax/data/sources.py)
    c.data.image_shape = (8, 8, 1)  # H, W, C of the source's images (checked against the data)
    c.data.num_classes = 10  # labels 0..9 (0: unconditional)

    c.tokenizer = ml_collections.ConfigDict()
    c.tokenizer.kind = "pixels"  # one token per pixel, raster order
    c.tokenizer.levels = 17  # the digits' grey levels 0..16

    c.model = ml_collections.ConfigDict()
    c.model.family = "transformer"  # "transformer", "pixelcnn" (configs/digits_pixelcnn.py) or "pixelcnn_pp"
    c.model.condition = "class"  # what the prefix is: "class" (labels) or "text" (captions; configs/scenes_t2i.py)
    c.model.dim = 128  # residual width
    c.model.num_layers = 4
    c.model.num_heads = 4
    c.model.num_kv_heads = 2  # grouped-query attention: 2 key/value heads shared by 4 query heads
    c.model.mlp_dim = 384  # SwiGLU hidden width (0: LlamaGen's rule)
    c.model.rope = "2d"  # rotary embedding over the 8x8 grid
    c.model.rope_base = 10000.0
    c.model.cls_token_num = 1  # class tokens before the image tokens
    c.model.token_dropout = 0.1  # dropout on input embeddings (training only)
    c.model.resid_dropout = 0.1  # dropout on attention outputs
    c.model.ffn_dropout = 0.1  # dropout on feed-forward outputs
    c.model.dtype = "float32"  # compute dtype ("bfloat16" on accelerators)
    c.model.scan_layers = False  # True: one scanned block, params stacked [layers, ...] (compiles once for any depth)
    c.model.remat = "none"  # recompute activations in the backward pass: "none", "full" or "dots" (keep matmuls)

    c.label_dropout = 0.1  # probability a training label becomes the null class (enables CFG)
    c.batch_size = 32  # global batch, images
    c.grad_accum_steps = 1  # micro-batches per step (same update as one batch; less activation memory)
    c.ema_decay = 0.999  # EMA of weights, used for sampling/eval by default; 0 switches it off
    c.ema_warmup = True  # decay min(ema_decay, (1 + t) / (10 + t)) early in training
    c.num_train_steps = 1500  # optimizer steps
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 1.5e-3  # peak, after warm-up
    c.optimizer.warmup_steps = 100
    c.optimizer.end_learning_rate_fraction = 0.05  # cosine decays to this fraction of the peak
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.95
    c.optimizer.weight_decay = 0.1  # decoupled (AdamW), on matrices only
    c.optimizer.grad_clip = 1.0  # global-norm clipping

    c.skip_nonfinite_steps = False  # True: a NaN/Inf step is skipped (logged); False: training stops
    c.log_every = 100  # steps between train-metric lines in metrics.jsonl
    c.validation_fraction = 0.1  # share of the training images held out (fixed by seed) to pick the best checkpoint
    c.eval_every = 250  # steps between test and validation bits/dim evaluations (each also saves a checkpoint)
    c.checkpoint_every = 250  # steps between checkpoints (also saved at the end)
    c.keep_checkpoints = 2  # newest checkpoints kept, beside the best by validation bits/dim

    c.sampling = ml_collections.ConfigDict()
    c.sampling.temperature = 1.0
    c.sampling.top_k = 0  # 0: off
    c.sampling.top_p = 1.0  # 1.0: off
    c.sampling.cfg_scale = 1.5  # classifier-free guidance (1.0: off)
    c.sampling.greedy = False
    c.samples_per_class = 10  # columns of the final samples.png grid
    c.sample_every = 500  # steps between sample grids in TensorBoard (0: only at the end)

    c.mesh = common.mesh()  # devices as (data, fsdp, tensor); data takes all by default
    c.backend = common.backend()  # platform choices: training/prefill attention

    if variant == "smoke":
        c.model.dim, c.model.num_layers, c.model.mlp_dim = 32, 2, 64
        c.batch_size, c.num_train_steps = 8, 4
        c.optimizer.warmup_steps = 1
        c.log_every, c.eval_every, c.checkpoint_every = 2, 2, 2
        c.samples_per_class = 2
        c.sample_every = 0
    elif variant is not None:
        raise ValueError(f"unknown variant {variant!r} of digits_pixels; use 'smoke' or none.")
    return c
