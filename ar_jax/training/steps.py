"""Pure, jit-able steps: `state, metrics = train_step(state, batch)` and per-example test NLL."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from ar_jax.models.transformer import Transformer, TransformerConfig
from ar_jax.training.state import TrainState


def token_nll(params: Any, cfg: TransformerConfig, tokens: jax.Array, labels: jax.Array, *,
              rng: jax.Array | None = None) -> jax.Array:
    """Teacher-forced NLL in nats of each image token, `[B, T]` (dropout on when rng is given)."""
    logits, _ = Transformer(cfg).apply({"params": params}, tokens[:, :-1], labels, deterministic=rng is None,
                                       rngs=None if rng is None else {"dropout": rng})
    logits = logits[:, cfg.cls_token_num - 1:]  # [B, T, V]: position C-1+j predicts token j
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens)


def train_step(state: TrainState, batch: dict[str, jax.Array], *, cfg: TransformerConfig,
               tx: optax.GradientTransformation, seed: int, label_dropout: float,
               skip_nonfinite: bool = False) -> tuple[TrainState, dict]:
    """One AdamW step on `batch = {"tokens": [B, T] int32, "labels": [B] int32}`.

    With `skip_nonfinite`, a step whose loss or gradients are not finite leaves params and optimizer
    state unchanged (the step counter still advances, so the data order stays a function of the step).
    """
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    drop_rng, label_rng = jax.random.split(rng)
    labels = batch["labels"]
    if label_dropout > 0:
        labels = jnp.where(jax.random.bernoulli(label_rng, label_dropout, labels.shape), cfg.null_label, labels)

    def loss_fn(params):
        return token_nll(params, cfg, batch["tokens"], labels, rng=drop_rng).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm, param_norm = optax.tree.norm(grads), optax.tree.norm(params)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
    if skip_nonfinite:
        params = jax.tree.map(lambda new, old: jnp.where(finite, new, old), params, state.params)
        opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), opt_state, state.opt_state)
    metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def example_nll(params: Any, batch: dict[str, jax.Array], *, cfg: TransformerConfig) -> jax.Array:
    """Exact NLL in nats of each example, `[B]` (no dropout, conditional on its label)."""
    return token_nll(params, cfg, batch["tokens"], batch["labels"]).sum(-1)
