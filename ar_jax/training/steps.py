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


def _accumulate(loss_fn: Any, params: Any, inputs: Any, rng: jax.Array | None,
                accum_steps: int) -> tuple[jax.Array, Any, Any]:
    """`(loss, grads, aux)` of `loss_fn(params, inputs, rng) -> (loss, aux)`; with `accum_steps = k` the batch
    `inputs` (a pytree, batch first) is split into k equal micro-batches processed by a `lax.scan` (activations of
    one micro-batch at a time): the mean of their losses and gradients, the sum of their `aux`."""
    if accum_steps == 1:
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, inputs, rng)
        return loss, grads, aux
    micro = lambda x: x.reshape(accum_steps, x.shape[0] // accum_steps, *x.shape[1:])
    inputs = jax.tree.map(micro, inputs)

    def body(carry, inp):
        i, x = inp
        r = None if rng is None else jax.random.fold_in(rng, i)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, r)
        return jax.tree.map(jnp.add, carry, (loss, grads, aux)), None

    aux_shape = jax.eval_shape(lambda: loss_fn(params, jax.tree.map(lambda x: x[0], inputs), rng)[1])
    zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params),
            jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), aux_shape))
    (loss, grads, aux), _ = jax.lax.scan(body, zero, (jnp.arange(accum_steps), inputs))
    loss, grads = jax.tree.map(lambda x: x / accum_steps, (loss, grads))
    return loss, grads, aux


def loss_and_grads(params: Any, cfg: ModelFamily, tokens: jax.Array, cond: Any, rng: jax.Array | None,
                   accum_steps: int = 1, backend: Backend | None = None) -> tuple[jax.Array, Any]:
    """Mean token NLL and its gradient; with `accum_steps = k` the batch is split into k equal micro-batches
    processed by a `lax.scan` (activations of one micro-batch at a time), giving the same mean and gradient."""
    def loss_fn(p, x, r):
        return token_nll(p, cfg, x[0], x[1], rng=r, backend=backend).mean(), ()

    loss, grads, _ = _accumulate(loss_fn, params, (tokens, cond), rng, accum_steps)
    return loss, grads


def both_ways_loss_and_grads(params: Any, cfg: ModelFamily, tokens: jax.Array, cond: Any, text: jax.Array,
                             rng: jax.Array | None, *, i2t_fraction: float, loss_weights: tuple[float, float],
                             i2t_image_targets: bool = True, accum_steps: int = 1,
                             backend: Backend | None = None) -> tuple[jax.Array, Any, dict]:
    """The loss of a model trained both ways (`text_head`) and its gradient, with the two modalities' mean NLLs.

    The first `round(i2t_fraction * B)` rows (a batch is a random draw, so any rows) become image-to-text sequences:
    their prompt is the null one and their caption `text [B, text_len + 2]` (`[bos, caption.., eos, 0..]`) follows
    the image; the other rows keep their prompt and their text is out of the loss. An image-to-text row's image
    tokens are targets too with `i2t_image_targets` (they train the unconditional model, as Chameleon trains every
    token), else only its context. The loss is `w_image * mean image-token NLL + w_text * mean caption-token NLL`
    over the targets (`loss_weights = (w_image, w_text)`; DALL-E used 7/8, 1/8), the same at any `accum_steps`:
    each target's weight is fixed over the whole batch before it is split.
    """
    if i2t_image_targets and getattr(cfg, "image_context", "causal") == "full":
        raise ValueError("image_context='full' lets an image-to-text row's image see itself both ways, so its image "
                         "tokens cannot be targets: set config.text.i2t_image_targets=False.")
    B, T = tokens.shape
    i2t = jnp.arange(B) < round(i2t_fraction * B)
    cond = conditions.drop(cfg, cond, i2t)
    counted = i2t[:, None] & (text[:, 1:] != 0)  # [B, text_len + 1] caption and eos targets
    images = jnp.ones((B,), bool) if i2t_image_targets else ~i2t  # rows whose image tokens are targets
    w_image, w_text = loss_weights
    n_text, n_image = jnp.maximum(counted.sum(), 1), jnp.maximum(images.sum(), 1)
    text_w = w_text * B * counted / n_text  # per target, so that the rows' mean is the loss
    image_w = w_image * B * images / n_image  # per row, on its mean image-token NLL

    def loss_fn(p, x, r):
        t, c, txt, tw, iw, rows = x
        img_nll, txt_nll = cfg.sequence_nll(p, t, c, txt, r, backend, i2t=rows)
        loss = (iw * img_nll.mean(-1) + (txt_nll * tw).sum(-1)).mean()
        return loss, (jnp.sum(jnp.where(iw > 0, img_nll.sum(-1), 0.0)), jnp.sum(jnp.where(tw > 0, txt_nll, 0.0)))

    loss, grads, (img_sum, txt_sum) = _accumulate(loss_fn, params, (tokens, cond, text, text_w, image_w, i2t), rng,
                                                  accum_steps)
    return loss, grads, {"image_loss": img_sum / (n_image * T), "text_loss": txt_sum / n_text}


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
               backend: Backend | None = None, i2t_fraction: float = 0.0,
               loss_weights: tuple[float, float] = (1.0, 1.0), i2t_image_targets: bool = True
               ) -> tuple[TrainState, dict]:
    """One AdamW step on `batch = {"tokens": [B, T] int32, "cond": the condition}` (class labels `[B]`, prompt ids
    `[B, L]`, ...: `ar_jax.models.conditions`); with `label_dropout` a row's condition becomes the null one.

    A model trained both ways (`text_head`) also gets `batch["text"]`, each row's caption `[B, text_len + 2]`: then
    `i2t_fraction` of the rows are image-to-text sequences, `loss_weights` weigh the two modalities and
    `i2t_image_targets` says whether their image tokens are targets (`both_ways_loss_and_grads`; metrics add
    `image_loss` and `text_loss`).

    With `skip_nonfinite`, a step whose loss or gradients are not finite leaves params and optimizer
    state unchanged (the step counter still advances, so the data order stays a function of the step).
    With `ema_decay > 0`, `state.ema_params` follows `ema = d * ema + (1 - d) * params`.
    """
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    drop_rng, label_rng = jax.random.split(rng)
    cond = drop_condition(cfg, batch["cond"], label_rng, label_dropout)

    parts = {}
    if "text" in batch:
        loss, grads, parts = both_ways_loss_and_grads(
            state.params, cfg, batch["tokens"], cond, batch["text"], drop_rng, i2t_fraction=i2t_fraction,
            loss_weights=loss_weights, i2t_image_targets=i2t_image_targets, accum_steps=grad_accum_steps,
            backend=backend)
    else:
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
    metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite, **parts}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema), metrics


def example_nll(params: Any, batch: dict[str, jax.Array], *, cfg: ModelFamily,
                backend: Backend | None = None) -> jax.Array:
    """Exact NLL in nats of each example, `[B]` (no dropout, given its condition)."""
    return token_nll(params, cfg, batch["tokens"], batch["cond"], backend=backend).sum(-1)
