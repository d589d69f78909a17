"""Training the VQ tokenizer: `train_vq(config, workdir)` for a config with `kind = "vq"` (configs/shapes_vq.py).

Loss = reconstruction (L1 or L2, on images in [-1, 1]) + codebook loss + beta * commitment loss (from
`vq.quantize`), plus, with `config.perceptual.weight > 0`, the LPIPS loss from local VGG16 weights
(training/perceptual.py), and with `config.gan.weight > 0` the VQGAN adversarial loss (training/vq_gan.py).
Two options keep the codebook in use:
- EMA codebook (VQ-VAE-2): the codebook is not trained by gradients but set to running means of the encoder
  outputs assigned to each code, `N_k <- g N_k + (1-g) n_k`, `m_k <- g m_k + (1-g) sum_{z -> k} z`,
  Laplace-smoothed counts `N'_k = (N_k + eps) / (N + K eps) * N`, `e_k = m_k / N'_k`;
- dead-code restart: every `restart_every` steps, each code chosen fewer than `restart_min_count` times since
  the last restart is replaced by a random encoder output of the current batch.
The state is a plain dict pytree (`step`, `params`, `opt_state`, `ema_count`, `ema_sum`, `code_counts`),
checkpointed with the AR trainer's `Checkpointer`; metrics go to `metrics.jsonl` through `MetricWriter`.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ar_jax import backends, sharding
from ar_jax.backends import Backend
from ar_jax.config import diff_keys, read_config, save_config
from ar_jax.data import pipeline
from ar_jax.data.sources import get_dataset
from ar_jax.tokenizers.vq import VQConfig, VQModel, init_params, l2_normalize
from ar_jax.tokenizers.vq_tokens import vq_config
from ar_jax.training import perceptual, vq_gan
from ar_jax.training.checkpoints import Checkpointer
from ar_jax.training.metrics import METRICS_FILE, MetricWriter
from ar_jax.training.state import learning_rate, make_optimizer

VQ_SECTIONS = ("kind", "data", "model")  # config sections that fix the tokenizer's parameter shapes
EVAL_BATCH = 256  # images per encode/decode call in evaluation and in the pipeline


def to_float(images: Any) -> jax.Array:
    """uint8 `[B, H, W, C]` -> float32 in [-1, 1]."""
    return jnp.asarray(images, jnp.float32) / 127.5 - 1.0


def to_uint8(images: Any) -> np.ndarray:
    """float `[B, H, W, C]` in [-1, 1] (clipped) -> uint8."""
    return np.asarray(jnp.round((jnp.clip(images, -1.0, 1.0) + 1.0) * 127.5)).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of uint8 image sets `a`, `b` `[N, H, W, C]`, from the MSE over the whole set."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def ema_codebook_update(count: jax.Array, total: jax.Array, z: jax.Array, codes: jax.Array, decay: float,
                        eps: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One EMA step. count `[K]`, total `[K, D]`, z `[N, D]`, codes `[N]` -> (count, total, codebook `[K, D]`)."""
    onehot = jax.nn.one_hot(codes, count.shape[0], dtype=jnp.float32)  # [N, K]
    count = decay * count + (1 - decay) * onehot.sum(0)
    total = decay * total + (1 - decay) * onehot.T @ z.astype(jnp.float32)
    n = count.sum()
    smoothed = (count + eps) / (n + count.shape[0] * eps) * n  # Laplace smoothing: no division by ~0
    return count, total, total / smoothed[:, None]


def restart_dead_codes(codebook: jax.Array, code_counts: jax.Array, z: jax.Array, rng: jax.Array,
                       min_count: float) -> tuple[jax.Array, jax.Array]:
    """Codes used fewer than `min_count` times become random rows of z `[N, D]` (distinct rows when N >= K).

    codebook `[K, D]`, code_counts `[K]` -> (codebook `[K, D]`, dead `[K]` bool).
    """
    k = codebook.shape[0]
    pick = jax.random.choice(rng, z.shape[0], (k,), replace=z.shape[0] < k)
    dead = code_counts < min_count
    return jnp.where(dead[:, None], z[pick].astype(codebook.dtype), codebook), dead


def _forward(cfg: VQConfig, params: Any, images: jax.Array, rng: jax.Array | None = None,
             backend: Backend = backends.XLA) -> tuple:
    """images -> (recon, z `[B, h, w, D]` as the quantizer compares it, codes `[B, h, w]`, aux)."""
    def fn(m: VQModel, x: jax.Array) -> tuple:
        z = m.quant_conv(m.encoder(x, rng is None))
        zq, codes, aux = m.quantize(z)
        return m.decode(zq, rng is None), (l2_normalize(z) if cfg.codebook_l2_norm else z), codes, aux
    rngs = None if rng is None else {"dropout": rng}
    return VQModel(cfg, backend).apply({"params": params}, images, method=fn, rngs=rngs)


def init_state(config: ml_collections.ConfigDict, cfg: VQConfig, tx: optax.GradientTransformation) -> dict:
    """The train state pytree (with the discriminator's params and optimizer state when `config.gan.weight > 0`)."""
    params = init_params(cfg, jax.random.key(config.seed), int(config.data.image_shape[0]))
    k, d = cfg.codebook_size, cfg.codebook_embed_dim
    codebook = params["quantize"]["codebook"]
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
             "ema_count": jnp.ones((k,), jnp.float32), "ema_sum": jnp.asarray(codebook, jnp.float32).reshape(k, d),
             "code_counts": jnp.zeros((k,), jnp.float32)}
    if config.gan.weight > 0:
        state.update(vq_gan.init_disc(config, tuple(config.data.image_shape), jax.random.key(config.seed + 1)))
    return state


def train_step(state: dict, images: jax.Array, lpips_params: Any = None, *, config: ml_collections.ConfigDict,
               cfg: VQConfig, tx: optax.GradientTransformation, backend: Backend = backends.XLA
               ) -> tuple[dict, dict]:
    """One update on uint8 `images [B, H, W, C]`: `(state, metrics)`; `lpips_params` when the perceptual loss is on."""
    q = config.quantizer
    use_ema = q.ema_decay > 0
    rng = jax.random.fold_in(jax.random.key(config.seed), state["step"])
    x = to_float(images)

    def parts(params: Any) -> tuple:
        """-> ((recon + vq losses, recon loss), (reconstructions, (z, codes, aux)))."""
        recon, z, codes, aux = _forward(cfg, params, x, rng if cfg.dropout > 0 else None, backend)
        err = recon - x
        rec = jnp.mean(jnp.abs(err)) if config.recon_loss == "l1" else jnp.mean(err ** 2)
        if lpips_params is not None:  # taming's "nll": pixel + perceptual, both in the GAN weight's numerator
            p_loss = jnp.mean(perceptual.lpips(lpips_params, recon, x))
            rec = rec + config.perceptual.weight * p_loss
            aux = {**aux, "perceptual_loss": p_loss}
        loss = rec + aux["commit_loss"] + (0.0 if use_ema else aux["codebook_loss"])
        return (loss, rec), (recon, (z, codes, aux))

    gan_metrics, extra_state = {}, {}
    if config.gan.weight > 0:  # VQGAN: adaptive-weighted hinge generator loss, then a discriminator update
        grads, loss, (rec, recon, (z, codes, aux)), gan_metrics = vq_gan.generator_grads(
            config, parts, state["params"], state["disc_params"], state["step"])
        disc_params, disc_opt, d_metrics = vq_gan.disc_step(config, state["disc_params"], state["disc_opt_state"],
                                                            x, recon, state["step"])
        extra_state = {"disc_params": disc_params, "disc_opt_state": disc_opt}
        gan_metrics.update(d_metrics)
    else:
        def loss_fn(params: Any) -> tuple:
            (loss, rec), (_, rest) = parts(params)
            return loss, (rec, rest)

        (loss, (rec, (z, codes, aux))), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    z = z.reshape(-1, z.shape[-1])  # [N, D]
    codes = codes.reshape(-1)  # [N]
    count, total, codebook = state["ema_count"], state["ema_sum"], params["quantize"]["codebook"]
    if use_ema:
        count, total, codebook = ema_codebook_update(count, total, z, codes, q.ema_decay, q.ema_eps)
    code_counts = state["code_counts"] + jnp.zeros_like(count).at[codes].add(1.0)
    step = state["step"] + 1
    restarted = jnp.zeros((), jnp.float32)
    if q.restart_every > 0:
        due = step % q.restart_every == 0
        new_codebook, dead = restart_dead_codes(codebook, code_counts, jax.lax.stop_gradient(z),
                                                jax.random.fold_in(rng, 1), q.restart_min_count)
        dead = dead & due
        codebook = jnp.where(dead[:, None], new_codebook, codebook)
        count = jnp.where(dead, 1.0, count)  # a restarted code's EMA starts at its new vector
        total = jnp.where(dead[:, None], new_codebook, total)
        code_counts = jnp.where(due, 0.0, code_counts)
        restarted = dead.sum().astype(jnp.float32)
    params = {**params, "quantize": {**params["quantize"], "codebook": codebook}}
    state = {"step": step, "params": params, "opt_state": opt_state, "ema_count": count, "ema_sum": total,
             "code_counts": code_counts, **extra_state}
    metrics = {"loss": loss, "recon_loss": rec, "commit_loss": aux["commit_loss"],
               "codebook_loss": aux["codebook_loss"], "perplexity": aux["perplexity"], "usage": aux["usage"],
               "grad_norm": optax.tree.norm(grads), "restarted_codes": restarted, **gan_metrics}
    if "perceptual_loss" in aux:
        metrics["perceptual_loss"] = aux["perceptual_loss"]
    return state, metrics


@functools.partial(backends.jit, kind="conv", static_argnames=("cfg", "backend"))
def _reconstruct(params: Any, cfg: VQConfig, images: jax.Array, backend: Backend) -> tuple[jax.Array, jax.Array]:
    recon, _, codes, _ = _forward(cfg, params, to_float(images), backend=backend)
    return recon, codes


def reconstruct(params: Any, cfg: VQConfig, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 `[N, H, W, C]` -> (uint8 reconstructions `[N, H, W, C]`, codes `[N, h, w]`), in batches."""
    outs, all_codes = [], []
    for i in range(0, len(images), EVAL_BATCH):
        recon, codes = _reconstruct(params, cfg, images[i: i + EVAL_BATCH], backends.for_arrays(params))
        outs.append(to_uint8(recon))
        all_codes.append(np.asarray(codes))
    return np.concatenate(outs), np.concatenate(all_codes)


def evaluate(params: Any, cfg: VQConfig, images: np.ndarray) -> dict[str, float]:
    """Test PSNR, codebook usage (fraction of codes used on `images`) and code perplexity."""
    recon, codes = reconstruct(params, cfg, images)
    counts = np.bincount(codes.ravel(), minlength=cfg.codebook_size)
    p = counts / counts.sum()
    return {"test_psnr": psnr(recon, images), "test_codebook_usage": float(np.mean(counts > 0)),
            "test_perplexity": float(np.exp(-np.sum(p * np.log(p + 1e-10))))}


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raise ValueError naming a bad value and the fix, before anything is compiled."""
    for key in ("batch_size", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
        if int(config[key]) != config[key] or config[key] < 1:
            raise ValueError(f"config.{key}={config[key]!r} must be a positive integer.")
    if config.recon_loss not in ("l1", "l2"):
        raise ValueError(f"config.recon_loss={config.recon_loss!r} must be 'l1' or 'l2'.")
    if not 0 <= config.quantizer.ema_decay < 1:
        raise ValueError(f"config.quantizer.ema_decay={config.quantizer.ema_decay} must be in [0, 1) (0: off).")
    if config.gan.weight < 0 or config.gan.start_step < 0:
        raise ValueError(f"config.gan.weight={config.gan.weight} and config.gan.start_step={config.gan.start_step} "
                         "must be >= 0 (weight 0: no discriminator).")
    if config.quantizer.restart_every < 0:
        raise ValueError(f"config.quantizer.restart_every={config.quantizer.restart_every} must be >= 0 (0: off).")
    perceptual.check_config(config)


def prepare_workdir(config: ml_collections.ConfigDict, workdir: Path) -> None:
    """Save the config, or refuse a workdir whose saved config builds a different tokenizer."""
    workdir.mkdir(parents=True, exist_ok=True)
    if (workdir / "config.json").exists():
        changed = diff_keys(read_config(workdir), config, VQ_SECTIONS)
        if changed:
            raise ValueError(f"{workdir} holds a tokenizer run whose config differs in {'; '.join(changed)}; use "
                             "a new --workdir, or drop those overrides to resume it.")
    save_config(config, workdir)


def train_vq(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Train the VQ tokenizer to `config.num_train_steps`, resuming from the latest checkpoint; returns the state."""
    workdir = Path(workdir)
    check_config(config)
    cfg = vq_config(config)
    data = get_dataset(config.data)
    if data.image_shape != tuple(config.data.image_shape):
        raise ValueError(f"config.data.image_shape={tuple(config.data.image_shape)} but {config.data.name!r} has "
                         f"{data.image_shape}; fix config.data.image_shape.")
    if data.image_shape[0] % cfg.downsample or data.image_shape[1] % cfg.downsample:
        raise ValueError(f"images {data.image_shape[:2]} are not divisible by the VQ downsampling {cfg.downsample} "
                         f"(ch_mult={cfg.ch_mult}); use fewer ch_mult levels.")
    sharding.maybe_initialize_distributed(config)
    mesh = sharding.make_mesh(config.mesh)  # data parallel: the batch over (data, fsdp), the state replicated
    sharding.check_batch(config.batch_size, mesh)
    lead = jax.process_index() == 0
    if lead:
        prepare_workdir(config, workdir)
    tx = make_optimizer(config)
    rep = sharding.replicated(mesh)
    state = jax.jit(lambda: init_state(config, cfg, tx), out_shardings=rep)()
    ckpt = Checkpointer(workdir, keep=config.keep_checkpoints)
    if ckpt.latest_step() is not None:
        state = ckpt.restore(state)
        logging.info("resumed from %s at step %d", ckpt.directory, int(state["step"]))
    start = int(state["step"])
    writer = MetricWriter(workdir, resume_step=start) if lead else None
    p = config.get("perceptual")
    lpips_params = None
    if p is not None and p.weight > 0:
        lpips_params = jax.device_put(perceptual.load_params(p.vgg_weights, p.lpips_weights), rep)
        if lead:
            print(f"perceptual (LPIPS) loss on, weight {p.weight}, VGG16 from {p.vgg_weights}")
    elif lead:
        print("perceptual (LPIPS) loss off: config.perceptual.weight is 0 (it needs local VGG16 and LPIPS weight "
              "files, see ar_jax/training/perceptual.py)")
    backend = backends.for_mesh(mesh)
    step_fn = jax.jit(functools.partial(train_step, config=config, cfg=cfg, tx=tx, backend=backend), donate_argnums=0,
                      in_shardings=(rep, sharding.batch_sharding(mesh, 4), rep), out_shardings=(rep, rep),
                      compiler_options=backend.compile_options("conv"))
    t0 = time.perf_counter()
    loader = pipeline.iterator(pipeline.batches(pipeline.ArraySource({"images": data.train_images}),
                                                config.batch_size, config.seed),
                               config.loader.read_threads, config.loader.prefetch, config.loader.workers)
    if start and not ckpt.restore_data(start, loader):
        pipeline.skip(loader, start)  # a checkpoint saved before the loader's state was kept
    try:
        for step in range(start, config.num_train_steps):
            images = sharding.put_batch(next(loader), mesh)["images"]
            state, metrics = step_fn(state, images, lpips_params)
            done = step + 1
            if done % config.log_every == 0 or done == config.num_train_steps:
                m = {k: float(v) for k, v in metrics.items()}
                if not np.isfinite(m["loss"]):
                    raise FloatingPointError(f"VQ loss is {m['loss']} at step {done}; lower "
                                             "config.optimizer.learning_rate (the last checkpoint is kept).")
                rate = (done - start) / max(time.perf_counter() - t0, 1e-9)
                if lead:
                    writer.write(done, **m, learning_rate=learning_rate(config, done), steps_per_s=rate)
                logging.info("step %d loss %.4f usage %.2f (%.1f steps/s)", done, m["loss"], m["usage"], rate)
            if done % config.eval_every == 0 or done == config.num_train_steps:
                scores = evaluate(state["params"], cfg, data.test_images)  # on every process (collective)
                if lead:
                    writer.write(done, **scores)
            if done % config.checkpoint_every == 0 or done == config.num_train_steps:
                ckpt.save(done, state, data=pipeline.DataState(loader))
    finally:
        ckpt.wait()
        ckpt.close()
        if lead:
            writer.close()
    print(f"tokenizer trained to step {int(state['step'])} in {workdir}; metrics: {workdir / METRICS_FILE}")
    return state
