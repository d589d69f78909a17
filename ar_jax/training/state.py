"""The train state (a plain pytree) and its optimizer."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ar_jax import sharding
from ar_jax.models.transformer import TransformerConfig


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps taken
    params: Any
    opt_state: Any
    ema_params: Any = None  # exponential moving average of params (None when config.ema_decay == 0)


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


def init_state(cfg: TransformerConfig, tx: optax.GradientTransformation, rng: jax.Array,
               ema: bool = False) -> TrainState:
    params, _ = cfg.init(rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      ema_params=jax.tree.map(jnp.copy, params) if ema else None)


def state_shardings(cfg: TransformerConfig, tx: optax.GradientTransformation, mesh: jax.sharding.Mesh,
                    ema: bool = False) -> TrainState:
    """NamedShardings of the train state: parameters by their logical names, optimizer moments like them."""
    abstract = jax.eval_shape(lambda r: init_state(cfg, tx, r), jax.random.key(0))
    params = sharding.tree_shardings(abstract.params, cfg.logical_axes(), mesh)
    rep = sharding.replicated(mesh)
    opt = optax.tree_map_params(tx, lambda _, sh: sh, abstract.opt_state, params,
                                transform_non_params=lambda _: rep)
    opt = jax.tree.map(lambda x: x if isinstance(x, jax.sharding.Sharding) else rep, opt,
                       is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
    return TrainState(step=rep, params=params, opt_state=opt, ema_params=params if ema else None)
