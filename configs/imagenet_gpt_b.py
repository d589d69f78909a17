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

import ml_collections

from ar_jax.config import load_config_file

IMAGENET_TRAIN = 1_281_167  # images in ImageNet-1k's train split


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    here = Path(__file__)
    if variant == "smoke":  # the recipe below over the codes of imagenet_vq16:smoke (32 px shapes, tiny model)
        c = load_config_file(str(here.with_name("shapes_ar.py")) + ":smoke")
        c.unlock()
        c.tokenizer.workdir = "runs/imagenet_vq16_smoke"  # python train.py --config configs/imagenet_vq16.py:smoke
        c.model.num_kv_heads = 0  # LlamaGen: no grouped-query attention
        c.model.token_dropout = c.model.resid_dropout = c.model.ffn_dropout = 0.1
        c.ema_decay = 0.0
        c.optimizer.learning_rate, c.optimizer.warmup_steps, c.optimizer.end_learning_rate_fraction = 1e-3, 0, 1.0
        c.optimizer.b1, c.optimizer.b2, c.optimizer.weight_decay = 0.9, 0.95, 0.05
        c.sampling.cfg_scale, c.sampling.top_k = 4.0, 8  # top-k 2000 in the recipe; here at most the 16 codes
        return c
    if variant is not None:
        raise ValueError(f"unknown variant {variant!r} of imagenet_gpt_b; use 'smoke' or none.")
    c = load_config_file(str(here.with_name("shapes_ar.py")))
    c.unlock()
    c.data = load_config_file(str(here.with_name("imagenet_vq16.py"))).data.copy_and_resolve_references()
    c.data.unlock()

    c.tokenizer.workdir = "runs/imagenet_vq16"  # a trained tokenizer run (configs/imagenet_vq16.py)
    c.tokenizer.codebook_size = 16384  # --vocab-size
    c.tokenizer.grid = (16, 16)  # --image-size 256 / --downsample-size 16

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

    c.label_dropout = 0.1  # ModelArgs.class_dropout_prob
    c.batch_size = 256  # --global-batch-size (global, images)
    c.grad_accum_steps = 1  # --gradient-accumulation-steps; raise it where 256 x 257 tokens do not fit
    c.ema_decay = 0.0  # LlamaGen trains without EMA by default (--ema); e.g. 0.9999 keeps one
    c.num_train_steps = 300 * (IMAGENET_TRAIN // 256)  # --epochs 300, drop_last: 1,501,200 steps
    c.optimizer.learning_rate = 1e-4  # --lr, constant (LlamaGen has no schedule)
    c.optimizer.warmup_steps = 0
    c.optimizer.end_learning_rate_fraction = 1.0  # constant
    c.optimizer.b1 = 0.9  # --beta1
    c.optimizer.b2 = 0.95  # --beta2
    c.optimizer.weight_decay = 0.05  # --weight-decay, on parameters with 2+ dimensions (LlamaGen's groups)
    c.optimizer.grad_clip = 1.0  # --max-grad-norm

    c.log_every = 100  # --log-every
    c.eval_every = 5000  # steps between test bits/dim evaluations (validation[:10000])
    c.checkpoint_every = 5000  # --ckpt-every
    c.keep_checkpoints = 2  # newest checkpoints kept (no best: nothing is held out)
    c.validation_fraction = 0.0  # LlamaGen holds none of the train split out; 0.01 would be 12,812 images
    c.samples_per_class = 1  # the final grid has one row per class (1000 rows)
    c.sample_every = 0  # only at the end

    c.sampling.temperature = 1.0  # sample_c2i.py defaults
    c.sampling.top_k = 2000
    c.sampling.top_p = 1.0
    c.sampling.cfg_scale = 4.0

    c.mesh.data = -1  # every device splits the batch
    c.mesh.fsdp = 1  # >1 shards parameters and optimizer state along embed (GPT-L and up)
    c.mesh.tensor = 1  # >1 shards heads, MLP width and vocabulary
    return c
