"""LlamaGen's GPT-B recipe: a class-conditional transformer over the 16x16 codes of the ImageNet VQ-16 tokenizer.

    python train.py --config configs/imagenet_vq16.py --workdir runs/imagenet_vq16 \
        --config.data.tfds_manual_dir=/data/imagenet_tars
    python train.py --config configs/imagenet_gpt_b.py --workdir runs/imagenet_gpt_b \
        --config.tokenizer.workdir=runs/imagenet_vq16 --config.data.tfds_manual_dir=/data/imagenet_tars
    python sample.py --workdir runs/imagenet_gpt_b --labels 207,360,387 --per_class 4 --out grid.png

(A released LlamaGen tokenizer works too: `python -m ar_jax.convert.llamagen --vq vq_ds16_c2i.pt --out W` writes
W/tokenizer, an ar_jax tokenizer workdir.) Hyper-parameters are LlamaGen's (FoundationVision/LlamaGen,
autoregressive/train/train_c2i.py argparse defaults, autoregressive/models/gpt.py GPT_B and ModelArgs,
autoregressive/sample/sample_c2i.py): dim 768, 12 layers, 12 heads, SwiGLU width 2048 (multiple_of 256),
2-D RoPE, one class token, vocab 16384, 256 tokens, class dropout 0.1 (the null class for CFG), token dropout
0.1, residual/FFN dropout 0.1, AdamW lr 1e-4 constant, betas (0.9, 0.95), weight decay 0.05 on matrices, grad
clip 1.0, global batch 256, 300 epochs (5,004 steps each), bf16 compute, no EMA (LlamaGen's --ema is off by
default), sampling with CFG 4.0 and top-k 2000. 111 M parameters. Differences: LlamaGen trains on codes
extracted once from ten-crop + flip augmentations (extract_codes_c2i.py); here each image is one centre crop,
tokenized once and cached in the tokenizer workdir's token_cache/. The images are held in memory before
tokenizing (about 252 GB for the whole train split; see configs/imagenet_vq16.py).
Hardware assumed: data parallel over 8+ accelerators (e.g. 8 A100/H100 or a TPU v4-16); the 111 M parameters and
their AdamW moments (1.3 GB) fit on every device, so `config.mesh` only splits the batch; for the larger
LlamaGen sizes set --config.mesh.fsdp. Expected throughput (our estimate, not measured): 6 x 111 M parameters x
256 x 257 tokens is about 44 TFLOP per step, so about 23 steps/s on 8 A100s at 40% of bf16 peak, about 18 hours
for the 1,501,200 steps. `configs/imagenet_gpt_b.py:smoke` runs it shrunk on a CPU over the codes of
`configs/imagenet_vq16.py:smoke` (train that first, into runs/imagenet_vq16_smoke).
"""

from pathlib import Path

import common
import ml_collections

from ar_jax.config import load_config_file

IMAGENET_TRAIN = 1_281_167  # images in ImageNet-1k's train split


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    """LlamaGen's `train_c2i.py` for GPT-B, every field set here (no toy config underneath)."""
    if variant not in (None, "smoke"):
        raise ValueError(f"unknown variant {variant!r} of imagenet_gpt_b; use 'smoke' or none.")
    here = Path(__file__)
    c = ml_collections.ConfigDict()
    c.seed = 0  # seeds init, data order, dropout and the final sample grid
    c.kind = "ar"  # a transformer prior over tokens
    c.data = load_config_file(str(here.with_name("imagenet_vq16.py"))).data.copy_and_resolve_references()

    c.tokenizer = ml_collections.ConfigDict()
    c.tokenizer.kind = "vq"  # codes of a trained VQ run (ar_jax/tokenizers/vq_tokens.py)
    c.tokenizer.workdir = "runs/imagenet_vq16"  # a trained tokenizer run (configs/imagenet_vq16.py)
    c.tokenizer.codebook_size = 16384  # --vocab-size
    c.tokenizer.grid = (16, 16)  # --image-size 256 / --downsample-size 16

    c.model = ml_collections.ConfigDict()
    c.model.family = "transformer"  # the one decoder (ar_jax/models/transformer.py)
    c.model.condition = "class"  # class labels are the prefix (LlamaGen c2i)
    c.model.dim = 768  # GPT_B
    c.model.num_layers = 12
    c.model.num_heads = 12
    c.model.num_kv_heads = 0  # 0: = num_heads (LlamaGen's n_kv_head=None)
    c.model.mlp_dim = 0  # 0: LlamaGen's rule, find_multiple(int(2 * 4 * 768 / 3), 256) = 2048
    c.model.rope = "2d"  # precompute_freqs_cis_2d over the 16x16 grid
    c.model.rope_base = 10000.0
    c.model.cls_token_num = 1  # --cls-token-num
    c.model.token_dropout = 0.1  # --token-dropout-p
    c.model.resid_dropout = 0.1  # --dropout-p
    c.model.ffn_dropout = 0.1  # --dropout-p
    c.model.dtype = "bfloat16"  # --mixed-precision bf16 (parameters, logits and loss stay float32)
    c.model.scan_layers = False  # True: one scanned block, params stacked [layers, ...] (compiles once for any depth)
    c.model.remat = "none"  # recompute activations in the backward pass: "none", "full" or "dots" (keep matmuls)

    c.label_dropout = 0.1  # ModelArgs.class_dropout_prob
    c.batch_size = 256  # --global-batch-size (global, images)
    c.grad_accum_steps = 1  # --gradient-accumulation-steps; raise it where 256 x 257 tokens do not fit
    c.ema_decay = 0.0  # LlamaGen trains without EMA by default (--ema); e.g. 0.9999 keeps one
    c.ema_warmup = True  # with EMA on: decay min(ema_decay, (1 + t) / (10 + t)) early in training
    c.num_train_steps = 300 * (IMAGENET_TRAIN // 256)  # --epochs 300, drop_last: 1,501,200 steps
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 1e-4  # --lr, constant (LlamaGen has no schedule)
    c.optimizer.warmup_steps = 0
    c.optimizer.end_learning_rate_fraction = 1.0  # constant
    c.optimizer.b1 = 0.9  # --beta1
    c.optimizer.b2 = 0.95  # --beta2
    c.optimizer.weight_decay = 0.05  # --weight-decay, on parameters with 2+ dimensions (LlamaGen's groups)
    c.optimizer.grad_clip = 1.0  # --max-grad-norm

    c.skip_nonfinite_steps = False  # True: a NaN/Inf step is skipped (logged); False: training stops
    c.log_every = 100  # --log-every
    c.eval_every = 5000  # steps between test bits/dim evaluations (validation[:10000])
    c.checkpoint_every = 5000  # --ckpt-every
    c.keep_checkpoints = 2  # newest checkpoints kept (no best: nothing is held out)
    c.validation_fraction = 0.0  # LlamaGen holds none of the train split out; 0.01 would be 12,812 images
    c.samples_per_class = 1  # the final grid has one row per class (1000 rows)
    c.sample_every = 0  # only at the end

    c.sampling = ml_collections.ConfigDict()  # sample_c2i.py defaults
    c.sampling.temperature = 1.0
    c.sampling.top_k = 2000
    c.sampling.top_p = 1.0
    c.sampling.cfg_scale = 4.0
    c.sampling.greedy = False

    c.mesh = common.mesh()  # every device splits the batch; fsdp > 1 shards parameters along embed (GPT-L and up)
    c.backend = common.backend()  # "cudnn" on GPUs, "splash" on TPUs
    if variant == "smoke":  # the same recipe over the codes of imagenet_vq16:smoke (32 px shapes, tiny model)
        c.data = load_config_file(str(here.with_name("imagenet_vq16.py:smoke"))).data.copy_and_resolve_references()
        c.tokenizer.workdir = "runs/imagenet_vq16_smoke"  # python train.py --config configs/imagenet_vq16.py:smoke
        vq = load_config_file(str(here.with_name("imagenet_vq16.py:smoke")))
        c.tokenizer.codebook_size, c.tokenizer.grid = vq.model.codebook_size, (8, 8)
        c.model.dim, c.model.num_layers, c.model.num_heads, c.model.mlp_dim = 32, 2, 4, 64
        c.model.dtype = "float32"
        c.batch_size, c.num_train_steps, c.optimizer.learning_rate = 8, 4, 1e-3
        c.log_every, c.eval_every, c.checkpoint_every = 2, 2, 2
        c.samples_per_class = 2
        c.sampling.top_k = 8  # top-k 2000 in the recipe; here at most the 16 codes
    return c
