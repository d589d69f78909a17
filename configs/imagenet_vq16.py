"""LlamaGen's VQ-16 tokenizer recipe on ImageNet 256x256 (16x16 codes from 16384), read through tfds.

    # once: put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in the manual dir (tfds needs TensorFlow to
    # prepare imagenet2012, not to read it afterwards)
    python train.py --config configs/imagenet_vq16.py --workdir runs/imagenet_vq16 \
        --config.data.tfds_manual_dir=/data/imagenet_tars --config.data.tfds_data_dir=/data/tfds

Hyper-parameters are LlamaGen's (FoundationVision/LlamaGen, tokenizer/tokenizer_image/vq_train.py argparse
defaults, vq_model.py VQ_16, vq_loss.py VQLoss): ch 128, ch_mult (1, 1, 2, 2, 4), z_channels 256, 2 res blocks,
codebook 16384 x 8 with l2-normalised codes, commitment beta 0.25, codebook loss weight 1, L2 reconstruction,
PatchGAN (ndf 64, 3 layers, hinge) with weight 0.5 from step 20,000, Adam lr 1e-4 constant, betas (0.9, 0.95),
grad clip 1.0, global batch 128, 40 epochs (10,009 steps each), bf16 compute. Differences, by necessity or design:
- the LPIPS perceptual loss (weight 1.0, as LlamaGen) reads VGG16 and LPIPS weights from local files, which the
  run asks for (add --config.perceptual.vgg_weights=... --config.perceptual.lpips_weights=..., or
  --config.perceptual.weight=0 to train without it); nothing is downloaded;
- the GAN weight is taming's adaptive weight times 0.5 (LlamaGen's VQLoss has disc_adaptive_weight=False), and
  the discriminator's gradients are not clipped (LlamaGen clips them at 1.0 too);
- images are ADM/LlamaGen `center_crop_arr` crops (LlamaGen trains on `random_crop_arr` crops + flips);
- LlamaGen passes --weight-decay 0.05 but builds torch.optim.Adam without it, so weight decay is 0 here too;
- the dataset is held in memory as uint8 (the whole train split is about 252 GB at 256x256x3): on smaller hosts
  train on a slice, e.g. --config.data.tfds_train_split='train[:20%]'.
Hardware assumed: a data-parallel slice of 8+ accelerators (e.g. 8 A100/H100 or a TPU v4-16); `config.mesh`
splits the batch of 128 over every device and replicates the 72 M parameters. Expected throughput (our estimate,
not measured): XLA counts 0.39 TFLOP for one forward pass (encode + decode) of a 256 px image; a GAN step costs
about 5x that (forward, two backward passes for the adaptive weight, the discriminator), about 0.25 PFLOP per
step of 128: about 4 steps/s on 8 A100s at 40% of bf16 peak (optimistic for convolutions), i.e. about 28 hours
for the 400,360 steps. LlamaGen's paper/README give no tokenizer training throughput.
`configs/imagenet_vq16.py:smoke` runs the same recipe shrunk (32 px procedural shapes, tiny model) on a CPU.
"""

from pathlib import Path

import ml_collections

from ar_jax.config import load_config_file

IMAGENET_TRAIN = 1_281_167  # images in ImageNet-1k's train split


def imagenet_data() -> ml_collections.ConfigDict:
    """ImageNet-1k through tensorflow-datasets (ar_jax/data/tfds_source.py), centre-cropped to 256x256."""
    d = ml_collections.ConfigDict()
    d.name = "tfds"  # image source (ar_jax/data/tfds_source.py): read without TensorFlow
    d.tfds_name = "imagenet2012"  # tfds dataset (manual download: the two ILSVRC2012 tars)
    d.tfds_data_dir = None  # where tfds keeps prepared datasets (None: ~/tensorflow_datasets)
    d.tfds_manual_dir = None  # folder holding ILSVRC2012_img_{train,val}.tar (None: <data_dir>/downloads/manual)
    d.tfds_download = True  # prepare it on first use (needs TensorFlow once); False: refuse if not prepared
    d.tfds_train_split = "train"  # tfds split spec, e.g. 'train[:10%]' to fit a smaller host
    d.tfds_test_split = "validation[:10000]"  # held-out images for test PSNR / bits per dim (in memory too)
    d.image_shape = (256, 256, 3)  # ADM/LlamaGen center_crop_arr: box-halve, bicubic shorter side, centre crop
    d.num_classes = 1000
    return d


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    c = load_config_file(str(Path(__file__).with_name("shapes_vq.py")) + (":smoke" if variant == "smoke" else ""))
    c.unlock()
    if variant == "smoke":  # the recipe below on procedural 32x32 shapes (no download), shrunk to run on a CPU
        c.model.codebook_l2_norm = True
        c.quantizer.ema_decay, c.quantizer.restart_every = 0.0, 0  # LlamaGen: codebook by its loss, no restarts
        c.gan.weight = 0.0  # no discriminator: it triples the compile time (tests/test_vq_training.py covers it)
        c.gan.b1, c.gan.b2 = 0.9, 0.95
        c.optimizer.warmup_steps, c.optimizer.end_learning_rate_fraction = 0, 1.0
        c.optimizer.b1, c.optimizer.b2, c.optimizer.weight_decay = 0.9, 0.95, 0.0
        c.batch_size, c.num_train_steps = 4, 4
        c.log_every, c.eval_every, c.checkpoint_every = 2, 4, 2
        return c
    if variant is not None:
        raise ValueError(f"unknown variant {variant!r} of imagenet_vq16; use 'smoke' or none.")

    c.data = imagenet_data()

    c.model.codebook_size = 16384  # LlamaGen --codebook-size
    c.model.codebook_embed_dim = 8  # --codebook-embed-dim
    c.model.codebook_l2_norm = True  # --codebook-l2-norm
    c.model.commit_loss_beta = 0.25  # --commit-loss-beta
    c.model.ch = 128  # Encoder/Decoder ch
    c.model.ch_mult = (1, 1, 2, 2, 4)  # VQ_16: encoder_ch_mult = decoder_ch_mult, 256 px -> 16x16 codes
    c.model.decoder_ch_mult = None  # None: same as ch_mult
    c.model.z_channels = 256
    c.model.num_res_blocks = 2
    c.model.dropout = 0.0  # --dropout-p
    c.model.norm_groups = 32  # GroupNorm(32) as LlamaGen's Normalize
    c.model.dtype = "bfloat16"  # LlamaGen --mixed-precision bf16 (parameters stay float32)

    c.quantizer.ema_decay = 0.0  # LlamaGen trains the codebook by its loss (codebook weight 1.0), no EMA
    c.quantizer.restart_every = 0  # no dead-code restarts (l2-normalised codes keep usage high)

    c.gan.weight = 0.5  # --disc-weight (times taming's adaptive weight, see the docstring)
    c.gan.start_step = 20_000  # --disc-start
    c.gan.ndf = 64  # VQLoss disc_dim
    c.gan.num_layers = 3  # VQLoss disc_num_layers (256 px -> 30x30 patch logits)
    c.gan.learning_rate = 1e-4  # LlamaGen's discriminator Adam uses the generator's lr and betas
    c.gan.b1 = 0.9
    c.gan.b2 = 0.95

    c.perceptual.weight = 1.0  # --perceptual-weight (LPIPS, VGG16); needs the two local weight files below
    c.perceptual.vgg_weights = ""  # torchvision's vgg16-397923af.pth: pass --config.perceptual.vgg_weights=PATH
    c.perceptual.lpips_weights = ""  # the lpips package's weights/v0.1/vgg.pth (LlamaGen's vgg_lpips.pth)

    c.recon_loss = "l2"  # --reconstruction-loss
    c.batch_size = 128  # --global-batch-size (global, images)
    c.num_train_steps = 40 * (IMAGENET_TRAIN // 128)  # --epochs 40, drop_last: 400,360 steps
    c.optimizer.learning_rate = 1e-4  # --lr, constant (LlamaGen has no schedule)
    c.optimizer.warmup_steps = 0
    c.optimizer.end_learning_rate_fraction = 1.0  # constant
    c.optimizer.b1 = 0.9  # --beta1
    c.optimizer.b2 = 0.95  # --beta2
    c.optimizer.weight_decay = 0.0  # torch.optim.Adam(params, lr, betas): LlamaGen's --weight-decay is unused
    c.optimizer.grad_clip = 1.0  # --max-grad-norm

    c.mesh.data = -1  # every device splits the batch (72 M parameters fit on each)
    c.log_every = 100  # --log-every
    c.eval_every = 5000  # steps between test PSNR / codebook-usage evaluations
    c.checkpoint_every = 5000  # --ckpt-every
    c.keep_checkpoints = 2
    return c
