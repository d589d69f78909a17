"""Pure, jit-able steps: `state, metrics = train_step(state, batch)` and per-example test NLL."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from ar_jax.backends import Backend
from ar_jax.models import conditions
from ar_jax.models.family import ModelFamily
from ar_jax.training.state import TrainState


def token_nll(params: Any, cfg: ModelFamily, tokens: jax.Array, cond: Any, *,
              rng: jax.Array | None = None, backend: Backend | None = None) -> jax.Array:
    """NLL in nats of each token `[B, T]` given the condition, under any model family (dropout on when rng is
    given)."""
    return cfg.token_nll(params, tokens, cond, rng, backend)


def loss_and_grads(params: Any, cfg: ModelFamily, tokens: jax.Array, cond: Any, rng: jax.Array | None,
                   accum_steps: int = 1, backend: Backend | None = None) -> tuple[jax.Array, Any]:
    """Mean token NLL and its gradient; with `accum_steps = k` the batch is split into k equal micro-batches
    processed by a `lax.scan` (activations of one micro-batch at a time), giving the same mean and gradient."""
    def loss_fn(p, t, lab, r):
        return token_nll(p, cfg, t, lab, rng=r, backend=backend).mean()

    if accum_steps == 1:
        return jax.value_and_grad(loss_fn)(params, tokens, cond, rng)
    micro = lambda x: x.reshape(accum_steps, x.shape[0] // accum_steps, *x.shape[1:])

    def body(carry, inp):
        i, t, lab = inp
        r = None if rng is None else jax.random.fold_in(rng, i)
        loss, grads = jax.value_and_grad(loss_fn)(params, t, lab, r)
        return jax.tree.map(jnp.add, carry, (loss, grads)), None

    zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
    (loss, grads), _ = jax.lax.scan(body, zero, (jnp.arange(accum_steps), micro(tokens),
                                                 jax.tree.map(micro, cond)))
    return jax.tree.map(lambda x: x / accum_steps, (loss, grads))


def drop_condition(cfg: ModelFamily, cond: Any, rng: jax.Array, rate: float) -> Any:
    """`cond` with each row replaced by the null condition (null class, empty prompt) with probability `rate`."""
    if rate <= 0:
        return cond
    return conditions.drop(cfg, cond, jax.random.bernoulli(rng, rate, (conditions.batch_size(cond),)))


def ema_decay_at(step: jax.Array, decay: float, warmup: bool) -> jax.Array:
    """EMA decay for the update after `step` optimizer steps; with warm-up `min(decay, (1 + t) / (10 + t))`."""
    if not warmup:
        return jnp.asarray(decay, jnp.float32)
    t = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def train_step(state: TrainState, batch: dict[str, jax.Array], *, cfg: ModelFamily,
               tx: optax.GradientTransformation, seed: int, label_dropout: float, skip_nonfinite: bool = False,
               grad_accum_steps: int = 1, ema_decay: float = 0.0, ema_warmup: bool = True,
               backend: Backend | None = None) -> tuple[TrainState, dict]:
    """One AdamW step on `batch = {"tokens": [B, T] int32, "cond": the condition}` (class labels `[B]`, prompt ids
    `[B, L]`, ...: `ar_jax.models.conditions`); with `label_dropout` a row's condition becomes the null one.

    With `skip_nonfinite`, a step whose loss or gradients are not finite leaves params and optimizer
    state unchanged (the step counter still advances, so the data order stays a function of the step).
    With `ema_decay > 0`, `state.ema_params` follows `ema = d * ema + (1 - d) * params`.
    """
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    drop_rng, label_rng = jax.random.split(rng)
    cond = drop_condition(cfg, batch["cond"], label_rng, label_dropout)

    loss, grads = loss_and_grads(state.params, cfg, batch["tokens"], cond, drop_rng, grad_accum_steps, backend)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm, param_norm = optax.tree.norm(grads), optax.tree.norm(params)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
    ema = state.ema_params
    if ema is not None:
        d = ema_decay_at(state.step, ema_decay, ema_warmup)
        ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, params)
    if skip_nonfinite:
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
        ema = ema if ema is None else keep(ema, state.ema_params)
    metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema), metrics


def example_nll(params: Any, batch: dict[str, jax.Array], *, cfg: ModelFamily,
                backend: Backend | None = None) -> jax.Array:
    """Exact NLL in nats of each example, `[B]` (no dropout, given its condition)."""
    return token_nll(params, cfg, batch["tokens"], batch["cond"], backend=backend).sum(-1)
