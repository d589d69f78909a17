"""A small VQ tokenizer (32x32 RGB -> 8x8 codes from 128) on the procedural shapes (no download).

    python train.py --config configs/shapes_vq.py --workdir runs/shapes_vq

1,500 steps of 32 took 11 min on 2 CPU cores shared with other jobs (about 2.3 steps/s); test PSNR 27.4 dB
(predicting the mean image: 13.9 dB), 99% of the 128 codes used on the test set (EMA codebook + dead-code
restarts). Then `ar_jax.load("runs/shapes_vq")` encodes/decodes, configs/shapes_ar.py trains a prior on its codes, and
`python benchmarks/vq_quality.py --vq_workdir runs/shapes_vq` measures it.
`configs/shapes_vq.py:smoke` shrinks everything for tests.
"""

import common
import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # seeds init, data order, dropout and code restarts
    c.kind = "vq"  # "vq": a tokenizer run (ar_jax/training/vq_trainer.py)

    c.data = ml_collections.ConfigDict()
    c.data.name = "shapes"  # image source (ar_jax/data/shapes.py)
    c.data.image_shape = (32, 32, 3)  # H, W, C of the source's images (checked against the data)
    c.data.num_classes = 5  # circle, square, triangle, plus, ring
    c.data.num_train = 5000  # generated training images
    c.data.num_test = 500  # generated test images (a fixed split, independent of num_train)
    c.data.seed = 0  # seeds the generated dataset (not the training)

    c.model = ml_collections.ConfigDict()  # fields of ar_jax.tokenizers.vq.VQConfig
    c.model.codebook_size = 128  # number of codes (the AR prior's vocabulary)
    c.model.codebook_embed_dim = 8  # width of a code vector
    c.model.codebook_l2_norm = True  # cosine-similarity lookup on L2-normalised vectors
    c.model.commit_loss_beta = 0.25  # weight of the commitment loss
    c.model.ch = 16  # base conv width
    c.model.ch_mult = (1, 2, 2)  # three levels: 32x32 -> 8x8 codes
    c.model.decoder_ch_mult = None  # None: same as ch_mult
    c.model.z_channels = 32  # encoder output / decoder input width
    c.model.num_res_blocks = 1  # res blocks per encoder level (decoder: one more)
    c.model.in_channels = 3
    c.model.out_channels = 3
    c.model.dropout = 0.0  # in the res blocks, training only
    c.model.norm_groups = 8  # GroupNorm groups (divides every width)
    c.model.norm_eps = 1e-6
    c.model.dtype = "float32"  # compute dtype ("bfloat16" on accelerators)

    c.quantizer = ml_collections.ConfigDict()
    c.quantizer.ema_decay = 0.99  # EMA codebook updates (VQ-VAE-2); 0: codebook trained by its gradient loss
    c.quantizer.ema_eps = 1e-5  # Laplace smoothing of the EMA code counts
    c.quantizer.restart_every = 100  # steps between dead-code restarts (0: off)
    c.quantizer.restart_min_count = 1.0  # codes chosen fewer times than this since the last restart are dead

    c.gan = ml_collections.ConfigDict()  # VQGAN part (ar_jax/training/vq_gan.py); off by default (CPU budget)
    c.gan.weight = 0.0  # weight of the adaptive-weighted hinge generator loss (0: no discriminator)
    c.gan.start_step = 500  # steps before the discriminator (and its loss) switch on
    c.gan.ndf = 32  # PatchGAN width of the first layer
    c.gan.num_layers = 2  # PatchGAN stride-2 layers after the first (32x32 -> 6x6 patch logits)
    c.gan.learning_rate = 2e-4  # discriminator Adam learning rate
    c.gan.b1 = 0.5  # discriminator Adam betas (taming's)
    c.gan.b2 = 0.9

    c.perceptual = ml_collections.ConfigDict()  # LPIPS loss (ar_jax/training/perceptual.py); needs local weights
    c.perceptual.weight = 0.0  # 0: off (the run says so); taming/LlamaGen use 1.0
    c.perceptual.vgg_weights = ""  # torchvision's vgg16-397923af.pth (or .safetensors), a local file
    c.perceptual.lpips_weights = ""  # the lpips package's weights/v0.1/vgg.pth, a local file

    c.recon_loss = "l2"  # "l1" or "l2" reconstruction loss, on images in [-1, 1]
    c.batch_size = 32  # images per step
    c.num_train_steps = 1500  # optimizer steps
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 2e-3  # peak, after warm-up
    c.optimizer.warmup_steps = 100
    c.optimizer.end_learning_rate_fraction = 0.1  # cosine decays to this fraction of the peak
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.99
    c.optimizer.weight_decay = 1e-4  # decoupled (AdamW), on matrices/kernels only
    c.optimizer.grad_clip = 1.0  # global-norm clipping

    c.loader = common.loader()  # Grain batches of the in-memory images (ar_jax/data/pipeline.py)
    c.mesh = ml_collections.ConfigDict()  # data parallel: the batch is split over data x fsdp, the state replicated
    c.mesh.data = -1  # data-parallel devices (-1: all the rest)
    c.mesh.fsdp = 1  # (the tokenizer trainer does not shard parameters: fsdp acts as more data parallelism)
    c.mesh.tensor = 1  # keep 1: the tokenizer trainer replicates parameters, so tensor devices would repeat work

    c.log_every = 100  # steps between train-metric lines in metrics.jsonl
    c.eval_every = 500  # steps between test PSNR / codebook-usage evaluations
    c.checkpoint_every = 500  # steps between checkpoints (also saved at the end)
    c.keep_checkpoints = 2  # newest checkpoints kept

    if variant == "smoke":
        c.data.num_train, c.data.num_test = 64, 16
        c.model.ch, c.model.z_channels, c.model.codebook_size = 8, 16, 16
        c.model.norm_groups = 4
        c.quantizer.restart_every = 5
        c.batch_size, c.num_train_steps = 8, 20
        c.optimizer.warmup_steps = 2
        c.log_every, c.eval_every, c.checkpoint_every = 5, 10, 10
    elif variant is not None:
        raise ValueError(f"unknown variant {variant!r} of shapes_vq; use 'smoke' or none.")
    return c
