"""The train state (a plain pytree) and its optimizer."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ar_jax.models.transformer import TransformerConfig, init_params


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps taken
    params: Any
    opt_state: Any


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW with linear warm-up and cosine decay, after global-norm gradient clipping."""
    o = config.optimizer
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=o.learning_rate, warmup_steps=o.warmup_steps,
        decay_steps=max(config.num_train_steps, o.warmup_steps + 1),
        end_value=o.learning_rate * o.end_learning_rate_fraction)
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    return optax.chain(optax.clip_by_global_norm(o.grad_clip),
                       optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay, mask=decay_mask))


def learning_rate(config: ml_collections.ConfigDict, step: int) -> float:
    o = config.optimizer
    return float(optax.warmup_cosine_decay_schedule(
        0.0, o.learning_rate, o.warmup_steps, max(config.num_train_steps, o.warmup_steps + 1),
        o.learning_rate * o.end_learning_rate_fraction)(step))


def init_state(cfg: TransformerConfig, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    params, _ = init_params(cfg, rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
