"""The training loop: `train_and_evaluate(config, workdir)` trains, evaluates, checkpoints, resumes, samples."""

from __future__ import annotations

import functools
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from ar_jax import backends, builders, sharding
from ar_jax.config import diff_keys, read_config, save_config
from ar_jax.data import pipeline
from ar_jax.data.pipeline import ArraySource
from ar_jax.data.sources import get_dataset
from ar_jax.data.splits import split_validation
from ar_jax.decode import captioning
from ar_jax.evaluation.likelihood import bits_per_dim
from ar_jax.images import grid_for_display, save_png
from ar_jax.models import conditions
from ar_jax.pipeline import ARPipeline, exact_likelihood
from ar_jax.training.checkpoints import BEST_METRIC, Checkpointer
from ar_jax.training.inputs import ShardInputs
from ar_jax.training.metrics import METRICS_FILE, TENSORBOARD_DIR, MetricWriter
from ar_jax.training.state import TrainState, init_state, learning_rate, make_optimizer, state_shardings
from ar_jax.training.steps import train_step

SAMPLES_FILE = "samples.png"


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raise ValueError naming a bad value and the fix, before anything is built or compiled."""
    for key in ("batch_size", "num_train_steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                "samples_per_class", "sample_every"):
        if int(config[key]) != config[key] or config[key] < (0 if key in ("num_train_steps", "sample_every") else 1):
            raise ValueError(f"config.{key}={config[key]!r} must be a positive integer.")
    if not 0 <= config.ema_decay < 1:
        raise ValueError(f"config.ema_decay={config.ema_decay} must be in [0, 1) (0 switches EMA off).")
    if config.grad_accum_steps < 1 or config.batch_size % config.grad_accum_steps:
        raise ValueError(f"config.grad_accum_steps={config.grad_accum_steps} must be >= 1 and divide "
                         f"config.batch_size={config.batch_size}.")
    if not isinstance(config.skip_nonfinite_steps, bool):
        raise ValueError(f"config.skip_nonfinite_steps={config.skip_nonfinite_steps!r} must be true or false.")
    if not 0 <= config.label_dropout < 1:
        raise ValueError(f"config.label_dropout={config.label_dropout} must be in [0, 1).")
    if config.optimizer.learning_rate <= 0:
        raise ValueError(f"config.optimizer.learning_rate={config.optimizer.learning_rate} must be > 0.")
    if builders.text_head_of(config):
        t = config.text
        missing = [k for k in ("i2t_fraction", "i2t_image_targets", "image_loss_weight", "text_loss_weight")
                   if k not in t]
        if missing:
            raise ValueError(f"config.model.text_head=True needs config.text.{', config.text.'.join(missing)} (the "
                             "share of image-to-text rows, the loss weight of each modality):"
                             " see configs/scenes_any.py.")
        if not 0 <= t.i2t_fraction <= 1:
            raise ValueError(f"config.text.i2t_fraction={t.i2t_fraction} must be in [0, 1] (the share of each batch's "
                             "rows that are image-to-text sequences).")
        if config.model.get("image_context", "causal") == "full" and t.i2t_image_targets:
            raise ValueError("config.model.image_context='full' (an image-to-text row's image sees itself both ways) "
                             "needs config.text.i2t_image_targets=False: those image tokens cannot be targets.")
        if min(t.image_loss_weight, t.text_loss_weight) < 0 or t.image_loss_weight + t.text_loss_weight <= 0:
            raise ValueError(f"config.text.image_loss_weight={t.image_loss_weight} and text_loss_weight="
                             f"{t.text_loss_weight} must be >= 0, not both 0 (DALL-E used 7/8 and 1/8).")
    if not 0 <= config.validation_fraction < 1:
        raise ValueError(f"config.validation_fraction={config.validation_fraction} must be in [0, 1) (0: no "
                         "validation split, no best checkpoint).")


def prepare_workdir(config: ml_collections.ConfigDict, workdir: Path) -> None:
    """Save the config, or refuse a workdir whose saved config builds a different model or training split."""
    workdir.mkdir(parents=True, exist_ok=True)
    if (workdir / "config.json").exists():
        saved = read_config(workdir)
        changed = diff_keys(saved, config, builders.MODEL_SECTIONS)
        before = saved.get("validation_fraction", 0.0)  # runs saved before validation splits held none out
        if before != config.validation_fraction:
            changed.append(f"validation_fraction: {before!r} -> {config.validation_fraction!r} (resume it with "
                           f"--config.validation_fraction={before!r})")
        if changed:
            raise ValueError(f"{workdir} holds a run whose config differs in what fixes its shapes or training "
                             f"examples: {'; '.join(changed)}. Use a new --workdir for a new run, or drop those "
                             "overrides to resume this one.")
    save_config(config, workdir)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> TrainState:
    """Train to `config.num_train_steps` (resuming from the latest checkpoint), then write samples.png.

    `config.validation_fraction` of the training images are held out (fixed by `config.seed`); at every evaluation
    their bits/dim (EMA weights when kept) is logged as `val_*` beside the test split's and saved with a checkpoint
    of that step, and the checkpoint with the lowest is kept beside the newest `config.keep_checkpoints`.
    Batches come from the Grain loader (the source in memory, or `config.loader.shards`), whose position is saved in
    every checkpoint; metrics stay on the device until a step that logs, evaluates, samples or saves.
    """
    if config.kind == "vq":
        from ar_jax.training.vq_trainer import train_vq
        return train_vq(config, workdir)
    if config.kind == "medusa":
        from ar_jax.training.medusa import train_medusa
        return train_medusa(config, workdir)
    workdir = Path(workdir)
    check_config(config)
    sharding.maybe_initialize_distributed(config)
    mesh = sharding.make_mesh(config.mesh)
    sharding.check_batch(config.batch_size, mesh)
    backend = backends.for_mesh(mesh, config.backend.attention)  # the platform, chosen once (before any compile)
    tokenizer = None  # a palette run's tokenizer is made from its data, below
    text_run = builders.condition_of(config) == "text"  # its prompt tokenizer, too
    if config.tokenizer.kind != "palette":  # a bad model config is refused before the data is read
        tokenizer = builders.make_tokenizer(config)
        if not text_run:
            builders.make_model_config(config, tokenizer)
    shard_inputs = ShardInputs(config, tokenizer) if config.loader.shards else None  # refused before any compile
    if shard_inputs is None:
        data = get_dataset(config.data)
        if data.image_shape != tuple(config.data.image_shape) or data.num_classes != config.data.num_classes:
            raise ValueError(f"config.data says images {tuple(config.data.image_shape)} with "
                             f"{config.data.num_classes} classes, but {config.data.name!r} has {data.image_shape} "
                             f"with {data.num_classes}; fix config.data.")
        data, validation = split_validation(data, config.validation_fraction, config.seed)
    lead = jax.process_index() == 0
    if lead:
        prepare_workdir(config, workdir)
    ckpt = Checkpointer(workdir, keep=config.keep_checkpoints, save_every=config.checkpoint_every)
    if tokenizer is None and ckpt.latest_step() is None:  # a new palette run fits its palette
        tokenizer = builders.fit_tokenizer(config, workdir, data.train_images, save=lead)
    elif tokenizer is None:  # a resumed one reads it
        tokenizer = builders.make_tokenizer(config, workdir)
    train_captions = data.train_captions if shard_inputs is None else (
        shard_inputs.captions() if text_run and ckpt.latest_step() is None else None)
    text_tokenizer = builders.fit_text_tokenizer(config, workdir, train_captions, save=lead)
    cfg = builders.make_model_config(config, tokenizer, text_tokenizer=text_tokenizer)
    both_ways = builders.text_head_of(config)  # captions also follow the images: `[N, text_len + 2]` ids
    if shard_inputs is not None:  # records read by Grain, a view picked per example; evaluation sets in memory
        train_source, pick = shard_inputs.train, shard_inputs.example_fn(cfg, text_tokenizer, both_ways)
        sets = shard_inputs.evaluation_sets(cfg, text_tokenizer, both_ways)
        test_tokens, test_cond, test_text = sets["test"]
        val_tokens, val_cond = sets["validation"] or (None, None)
    else:
        train_cond = conditions.of_examples(cfg, data.train_labels, data.train_captions, text_tokenizer)
        test_cond = conditions.of_examples(cfg, data.test_labels, data.test_captions, text_tokenizer)
        val_cond = None
        if config.validation_fraction:
            val_cond = conditions.of_examples(cfg, validation["labels"], validation.get("captions"), text_tokenizer)
        train_tokens, test_tokens = tokenizer.encode(data.train_images), tokenizer.encode(data.test_images)
        train_text, test_text = (
            text_tokenizer.pad_caption(text_tokenizer.check_length(list(captions), cfg.text_len), cfg.text_len)
            if both_ways else None for captions in (data.train_captions, data.test_captions))
        val_tokens = tokenizer.encode(validation["images"]) if config.validation_fraction else None
        train_source = ArraySource({"tokens": train_tokens, "cond": train_cond,
                                    **({"text": train_text} if both_ways else {})})
        pick = None
    # MaskGIT has no exact likelihood: its eval NLL is per masked token, named so (never bits/dim).
    exact = exact_likelihood(cfg)
    dims = int(np.prod(tokenizer.image_shape)) if exact else cfg.seq_len
    metric = "bits_per_dim" if exact else "masked_bits_per_token"

    tx = make_optimizer(config)
    use_ema = config.ema_decay > 0
    state_sh = state_shardings(cfg, tx, mesh, ema=use_ema)
    state = jax.jit(functools.partial(init_state, cfg, tx, ema=use_ema),
                    out_shardings=state_sh)(jax.random.key(config.seed))
    if ckpt.latest_step() is not None:
        state = ckpt.restore(state)
        logging.info("resumed from %s at step %d", ckpt.directory, int(state.step))
    start = int(state.step)
    writer = MetricWriter(workdir, resume_step=start) if lead else _NullWriter()
    batch_sh = {"tokens": sharding.batch_sharding(mesh, 2),
                "cond": jax.tree.map(lambda x: sharding.batch_sharding(mesh, np.ndim(x)), test_cond)}
    both = {}  # a run trained both ways: the image-to-text share and the loss weights
    if both_ways:
        batch_sh["text"] = sharding.batch_sharding(mesh, 2)
        both = dict(i2t_fraction=float(config.text.i2t_fraction),
                    loss_weights=(float(config.text.image_loss_weight), float(config.text.text_loss_weight)),
                    i2t_image_targets=bool(config.text.i2t_image_targets))
    step_fn = jax.jit(functools.partial(train_step, cfg=cfg, tx=tx, seed=config.seed,
                                        label_dropout=config.label_dropout,
                                        skip_nonfinite=config.skip_nonfinite_steps,
                                        grad_accum_steps=config.grad_accum_steps, ema_decay=config.ema_decay,
                                        ema_warmup=config.ema_warmup, backend=backend, **both),
                      in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, sharding.replicated(mesh)),
                      donate_argnums=0)
    step_fn = sharding.on_mesh(step_fn, mesh)  # the mesh in context: activations laid out by their logical names
    loader = pipeline.iterator(pipeline.batches(train_source, config.batch_size, config.seed, random_map=pick),
                               config.loader.read_threads, config.loader.prefetch, config.loader.workers)
    if start and not ckpt.restore_data(start, loader):
        logging.warning("checkpoint %d holds no data-loader state for this process; the loader skips %d batches.",
                        start, start)
        pipeline.skip(loader, start)

    val_key = f"val_{metric}" + ("_ema" if use_ema else "")  # the weights load() reads by default

    def evaluate(step: int) -> dict[str, float]:
        """Test bits/dim of the raw (and EMA) weights, and validation bits/dim of the default ones; logged."""
        out = {f"test_{metric}": float(bits_per_dim(state.params, cfg, test_tokens, test_cond, dims,
                                                     backend=backend).mean())}
        if use_ema:
            out[f"test_{metric}_ema"] = float(
                bits_per_dim(state.ema_params, cfg, test_tokens, test_cond, dims, backend=backend).mean())
        if both_ways:  # -log p(caption, eos | image), nats per test image
            out["test_caption_nll"] = float(-captioning.caption_logprob(
                state.ema_params if use_ema else state.params, cfg, test_tokens, test_text, backend=backend).mean())
        if val_tokens is not None:
            out[val_key] = float(bits_per_dim(state.ema_params if use_ema else state.params, cfg, val_tokens,
                                              val_cond, dims, backend=backend).mean())
        writer.write(step, **out)
        return out

    def ranking(evaluated: dict[str, float] | None) -> dict[str, float] | None:
        """What a checkpoint is saved with: its validation metric, by which the best one is kept."""
        if evaluated is None or val_key not in evaluated:
            return None
        return {BEST_METRIC: evaluated[val_key], val_key: evaluated[val_key]}

    def is_eval_step(step: int) -> bool:
        return step % config.eval_every == 0 or step == config.num_train_steps

    if val_tokens is not None and start and is_eval_step(start) and ckpt.metrics(start) is None:
        # stopped during the evaluation of `start` (its checkpoint saved without it): evaluate it now, so that the
        # best checkpoint is chosen among every evaluation, as in an uninterrupted run
        ckpt.save(start, state, ranking(evaluate(start)), data=pipeline.DataState(loader))

    bar = tqdm(total=config.num_train_steps, initial=start, desc="train", unit="step", dynamic_ncols=True,
               disable=not lead)
    t0, s0 = time.perf_counter(), start
    sigterm = _PreemptionFlag() if jax.process_count() == 1 else None  # many hosts: jax's preemption sync manager
    evaluated: dict[str, float] | None = None  # the evaluation of the step last trained, if it was one
    pending: list[tuple[int, dict]] = []  # (step, metrics on the device) not yet fetched
    position = pipeline.DataState(loader)  # the loader's position before the batch of the step being trained

    def check_pending() -> dict:
        """Fetch the metrics of the steps since the last fetch (one transfer): stop at the first non-finite step
        (unless skipped), log the skipped ones; the newest step's metrics, as numbers."""
        steps = [s for s, _ in pending]
        flags, last = _fetch(([(m["loss"], m["finite"]) for _, m in pending], pending[-1][1]))
        pending.clear()
        for s, (loss, finite) in zip(steps, flags):
            if not finite and not config.skip_nonfinite_steps:
                raise FloatingPointError(
                    f"loss is {float(loss)} at step {s} (loss, gradients or updated parameters are not finite); "
                    "training stopped and the last good checkpoint is kept. Lower config.optimizer.learning_rate, "
                    "check the data, or set config.skip_nonfinite_steps=True.")
            if not finite:
                logging.warning("non-finite loss/gradients/parameters at step %d: the update was skipped.", s)
                writer.write(s, skipped_nonfinite=1)
        return last

    try:
        for step in range(start, config.num_train_steps):
            position = pipeline.DataState(loader)
            with jax.transfer_guard_device_to_host("disallow"):  # no implicit fetch in a step: metrics stay put
                batch = next_batch(loader, mesh, step)
                state, metrics = step_fn(state, batch)
            done = step + 1
            evaluated = None
            pending.append((done, metrics))
            preempted = ckpt.reached_preemption(done) or (sigterm is not None and sigterm.is_set())
            log = done % config.log_every == 0 or done == config.num_train_steps
            sample = config.sample_every and done % config.sample_every == 0 and done != config.num_train_steps
            save = preempted or ckpt.should_save(done) or done == config.num_train_steps
            if log or save or sample or is_eval_step(done):  # the only steps that wait for the device
                last = check_pending()
                if log:
                    rate = (done - s0) / max(time.perf_counter() - t0, 1e-9)
                    parts = {k: float(last[k]) for k in ("image_loss", "text_loss") if k in last}
                    loss = float(last["loss"])
                    image_loss = parts.get("image_loss", loss)  # bits/dim are the image tokens' alone
                    writer.write(done, loss=loss, **{metric: image_loss / math.log(2)}, **parts,
                                 grad_norm=float(last["grad_norm"]), learning_rate=learning_rate(config, done),
                                 steps_per_s=rate)
                    bar.set_postfix(loss=f"{loss:.4f}", steps_per_s=f"{rate:.1f}")
            if is_eval_step(done):
                evaluated = evaluate(done)
                shown = {"val": evaluated.get(val_key), "test": evaluated.get(f"test_{metric}_ema",
                                                                               evaluated[f"test_{metric}"])}
                bar.set_postfix_str(", ".join(f"{k} {metric.replace('_per_', '/')} {v:.4f}"
                                              for k, v in shown.items() if v is not None))
            if sample:
                writer.write_image(done, "samples", sample_grid(config, state.ema_params if use_ema else state.params,
                                                                 tokenizer, text_tokenizer))
            if save or ranking(evaluated):  # every evaluated step may be the best
                ckpt.save(done, state, ranking(evaluated), data=pipeline.DataState(loader))
            bar.update(1)
            if preempted:
                ckpt.close()
                writer.close()
                print(f"preempted (SIGTERM) at step {done}: checkpoint saved in {ckpt.directory}; run the same "
                      "command again to resume.")
                return state
    except BaseException as e:
        # Keep what was trained: save the state reached, unless a step since the last fetch was not finite (a
        # FloatingPointError keeps the last checkpoint, which every fetch before a save had checked).
        try:
            reached = int(state.step)
            finite = config.skip_nonfinite_steps or all(bool(f) for f in _fetch([m["finite"] for _, m in pending]))
            if (not isinstance(e, FloatingPointError) and reached > start and finite
                    and all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(state.params))):
                ckpt.save(reached, state, ranking(evaluated),
                          data=position if reached == step else pipeline.DataState(loader))
        except Exception as err:  # noqa: BLE001 - e.g. buffers donated to a step that was interrupted
            logging.warning("could not save the interrupted state (%s); the last checkpoint is kept.", err)
        ckpt.close()
        writer.close()
        raise
    finally:
        bar.close()
        if sigterm is not None:
            sigterm.restore()
    ckpt.save(int(state.step), state, data=pipeline.DataState(loader))
    ckpt.close()
    if lead:
        grid = sample_grid(config, state.ema_params if use_ema else state.params, tokenizer, text_tokenizer)
        writer.write_image(int(state.step), "samples", grid)
        save_png(grid, workdir / SAMPLES_FILE)
        print(f"samples: {workdir / SAMPLES_FILE}\nTensorBoard logs: {workdir / TENSORBOARD_DIR} "
              f"(tensorboard --logdir {workdir})\nmetrics: {workdir / METRICS_FILE}")
    writer.close()
    return state


def next_batch(loader: Iterator, mesh: jax.sharding.Mesh, step: int) -> dict:
    """This process's rows of global batch `step` from the Grain iterator, as global arrays on the mesh (`step` lets
    a test stop a run at a chosen step)."""
    del step
    return sharding.put_batch(next(loader), mesh)


def _fetch(tree: object) -> object:
    """The one device-to-host transfer of the loop: a pytree of device values as numpy, at log/save/eval steps."""
    return jax.device_get(tree)


class _PreemptionFlag(threading.Event):
    """Set by SIGTERM (what TPU/GPU schedulers send) in a one-process run: the loop saves a checkpoint and returns.
    With many processes jax's preemption sync manager takes SIGTERM and orbax's `reached_preemption` agrees on the
    step every host saves."""

    def __init__(self) -> None:
        super().__init__()
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, lambda *_: self.set())

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


class _NullWriter:
    """Metrics are written by process 0 only."""

    def write(self, step: int, **metrics: float) -> None:
        del step, metrics

    def write_image(self, step: int, name: str, image: np.ndarray) -> None:
        del step, name, image

    def close(self) -> None:
        pass


def sample_grid(config: ml_collections.ConfigDict, params: object, tokenizer: object = None,
                text_tokenizer: object = None) -> np.ndarray:
    """A uint8 grid with one row per class, or per prompt of `config.text.sample_prompts` for a text run
    (`config.samples_per_class` columns), default sampling settings."""
    pipe = ARPipeline(config, params, tokenizer=tokenizer, text_tokenizer=text_tokenizer)
    if builders.condition_of(config) == "text":
        prompts = list(config.text.sample_prompts)
        images = pipe.sample(prompts=[p for p in prompts for _ in range(config.samples_per_class)], seed=config.seed)
        return grid_for_display(images, rows=len(prompts))
    classes = max(config.data.num_classes, 1)
    labels = np.repeat(np.arange(classes), config.samples_per_class)
    return grid_for_display(pipe.sample(labels, seed=config.seed), rows=classes)
