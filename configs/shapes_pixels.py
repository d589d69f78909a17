"""Class-conditional pixel transformer on the procedural 32x32 RGB shapes (no download): 3,072 subpixel tokens.

    python train.py --config configs/shapes_pixels.py --workdir runs/shapes_pixels

Tokens: 16 levels per channel (round(v * 15 / 255)), the tokens every shapes_* pixel model sees
(configs/shapes_pixelcnn.py, shapes_gated_pixelcnn.py, shapes_pixelcnn_pp.py), so their bits/dim compare. The
shapes' colours are continuous (all 256 values occur), so any level count quantises; 16 keeps the categorical
models' heads small on a CPU. A small 1-D-rope transformer: attention over 3,072 positions is the cost.
`python benchmarks/likelihood.py` measures it beside the other families.
`configs/shapes_pixels.py:smoke` shrinks everything for tests.

The figures below predate the validation split: trained on all 5,000 images (the default now holds 500 out).
Measured (idle 2 CPU cores, 240 steps of 4: 12 min of training, about 3 s a step, then 3 min for the test
evaluation of raw and EMA weights): test bits/dim 1.325 (EMA), by benchmarks/likelihood.py. It has seen 960
images, against the PixelCNNs' 9,600 in 6-14 min, so this is a budget figure. Causal attention over the 3,072
positions runs in query blocks (`transformer.blockwise_causal_attention`): a batch's gradient takes 3.1 s, 7.1 s
with full attention.
"""

import common
import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # seeds init, data order, dropout and the final sample grid
    c.kind = "ar"  # "ar": an autoregressive prior over tokens

    c.data = ml_collections.ConfigDict()
    c.data.name = "shapes"  # image source (ar_jax/data/shapes.py)
    c.data.image_shape = (32, 32, 3)  # H, W, C of the source's images (checked against the data)
    c.data.num_classes = 5  # circle, square, triangle, plus, ring
    c.data.num_train = 5000  # generated training images
    c.data.num_test = 500  # generated test images (a fixed split, independent of num_train)
    c.data.seed = 0  # seeds the generated dataset (not the training)

    c.tokenizer = ml_collections.ConfigDict()
    c.tokenizer.kind = "pixels"  # one token per subpixel, raster order, R G B within a pixel
    c.tokenizer.levels = 16  # levels per channel (4 bits)

    c.model = ml_collections.ConfigDict()
    c.model.family = "transformer"  # model family: "transformer", "pixelcnn" or "pixelcnn_pp"
    c.model.condition = "class"  # what the prefix is: "class" (labels) or "text" (captions; configs/scenes_t2i.py)
    c.model.dim = 64  # residual width
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.num_kv_heads = 2  # grouped-query attention
    c.model.mlp_dim = 192  # SwiGLU hidden width
    c.model.rope = "1d"  # rotary embedding over the 3,072 positions
    c.model.rope_base = 10000.0
    c.model.cls_token_num = 1  # class tokens before the image tokens
    c.model.token_dropout = 0.0  # few steps over 5,000 images: no dropout
    c.model.resid_dropout = 0.0
    c.model.ffn_dropout = 0.0
    c.model.dtype = "float32"  # compute dtype ("bfloat16" on accelerators)

    c.label_dropout = 0.1  # probability a training label becomes the null class (enables CFG)
    c.batch_size = 4  # global batch, images (12,288 tokens)
    c.grad_accum_steps = 1  # micro-batches per step (attention scores [4, 4, 128, <=3072] per query block)
    c.ema_decay = 0.99  # EMA of weights, used for sampling/eval by default; 0 switches it off
    c.ema_warmup = True  # decay min(ema_decay, (1 + t) / (10 + t)) early in training
    c.num_train_steps = 240  # optimizer steps (a CPU budget: about 3 s a step on 2 cores, attention over 3,072 tokens)
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 3e-3  # peak, after warm-up
    c.optimizer.warmup_steps = 20
    c.optimizer.end_learning_rate_fraction = 0.05  # cosine decays to this fraction of the peak
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.95
    c.optimizer.weight_decay = 0.1  # decoupled (AdamW), on matrices only
    c.optimizer.grad_clip = 1.0  # global-norm clipping

    c.skip_nonfinite_steps = False  # True: a NaN/Inf step is skipped (logged); False: training stops
    c.log_every = 10  # steps between train-metric lines in metrics.jsonl
    c.validation_fraction = 0.1  # share of the training images held out (fixed by seed) to pick the best checkpoint
    c.eval_every = 240  # steps between test and validation bits/dim evaluations (500 + 500 images: not cheap)
    c.checkpoint_every = 40  # steps between checkpoints (also saved at the end)
    c.keep_checkpoints = 2  # newest checkpoints kept, beside the best by validation bits/dim

    c.sampling = ml_collections.ConfigDict()
    c.sampling.temperature = 1.0
    c.sampling.top_k = 0  # 0: off
    c.sampling.top_p = 1.0  # 1.0: off
    c.sampling.cfg_scale = 1.5  # classifier-free guidance (1.0: off)
    c.sampling.greedy = False
    c.samples_per_class = 2  # columns of the final samples.png grid (3,072 tokens each)
    c.sample_every = 0  # steps between sample grids in TensorBoard (0: only at the end)

    c.loader = common.loader()  # Grain batches from the in-memory source (or token shards: loader.shards)
    c.mesh = common.mesh()  # devices as (data, fsdp, tensor); data takes all by default
    c.backend = common.backend()  # platform choices: training/prefill attention

    if variant == "smoke":
        c.data.num_train, c.data.num_test = 16, 4
        c.model.dim, c.model.num_layers, c.model.mlp_dim = 16, 1, 32
        c.batch_size, c.num_train_steps = 4, 4
        c.optimizer.warmup_steps = 1
        c.log_every, c.eval_every, c.checkpoint_every = 2, 2, 2
        c.samples_per_class = 1
    elif variant is not None:
        raise ValueError(f"unknown variant {variant!r} of shapes_pixels; use 'smoke' or none.")
    return c
