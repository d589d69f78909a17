"""Medusa heads for a trained, frozen AR run (Medusa-1), trained on the run's own samples (self-distillation).

The heads should guess what decoding will sample, so they learn from it: `config.medusa.num_samples` images are
sampled from the base run (`config.base_workdir`, never written) with its own `config.sampling`, for conditions drawn
from its training set (captions, or labels); the frozen decoder's hidden states and its distributions over them are
computed once. Head i at the position predicting token j is trained towards the model's distribution of token j + i
(the expectation of the sampled token, a less noisy target) with the cross-entropy of the distribution decoding
proposes from: the heads' logits for the condition and the null prompt combined by the run's guidance scale and
divided by its temperature (top-k and the other filters apart, which would make a sampled token impossible). The
checkpoint holds only the heads; `ar_jax.load(workdir)` gives the base run's pipeline with them attached, whose
`sample` then decodes with Medusa (`ar_jax.decode.medusa`, exactly the base run's distribution).
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

from ar_jax.config import save_config
from ar_jax.data.sources import get_dataset
from ar_jax.decode import processors as proc
from ar_jax.models import conditions, medusa
from ar_jax.models.transformer import Transformer, TransformerConfig
from ar_jax.training.checkpoints import Checkpointer
from ar_jax.training.metrics import MetricWriter
from ar_jax.training.state import TrainState, make_optimizer

Array = jax.Array


def check_config(config: ml_collections.ConfigDict) -> None:
    """ValueError naming a bad value of a Medusa config and the fix, before anything is read or compiled."""
    m = config.medusa
    if not Path(config.base_workdir, "config.json").is_file():
        raise ValueError(f"config.base_workdir={config.base_workdir!r} holds no trained run (no config.json); point "
                         "it at an AR workdir, e.g. --config.base_workdir=runs/scenes_t2i.")
    if m.num_heads < 1 or m.num_samples < config.batch_size or m.sample_batch < 1 or config.num_train_steps < 1:
        raise ValueError(f"config.medusa.num_heads={m.num_heads} must be >= 1, medusa.num_samples={m.num_samples} "
                         f">= batch_size={config.batch_size}, medusa.sample_batch={m.sample_batch} and "
                         f"num_train_steps={config.num_train_steps} >= 1.")


def distillation_set(base: Any, config: ml_collections.ConfigDict) -> tuple[np.ndarray, Any]:
    """`(tokens [N, T], cond)`: N = `config.medusa.num_samples` samples of the base run for conditions of its
    training examples (drawn with `config.seed`), at the run's sampling settings."""
    cfg, m = base.model_config, config.medusa
    data = get_dataset(base.config.data)
    pick = np.random.default_rng(config.seed).choice(len(data.train_labels), m.num_samples, replace=True)
    captions = None if data.train_captions is None else [data.train_captions[i] for i in pick]
    cond = conditions.of_examples(cfg, np.asarray(data.train_labels)[pick], captions, base.text_tokenizer)
    tokens = []
    for i, s in enumerate(range(0, m.num_samples, m.sample_batch)):
        chunk = jax.tree.map(lambda x, s=s: x[s:s + m.sample_batch], cond)
        tokens.append(np.asarray(base.sample_tokens(cond=chunk, seed=config.seed + i)))
    return np.concatenate(tokens), cond


@functools.partial(jax.jit, static_argnames=("cfg", "guided"))
def hidden_states(params: Any, tokens: Array, cond: Any, scale: Array, temperature: float, *, cfg: TransformerConfig,
                  guided: bool) -> tuple[Array, Array]:
    """The frozen decoder's final hidden state where each image token is predicted `[G, B, T, dim]` (G = 2 rows:
    condition and null, when guided), and its distribution of that token `[B, T, V]` (guided by `scale [T]`,
    tempered)."""
    rows = conditions.concat(cond, conditions.null_like(cfg, cond)) if guided else cond
    toks = jnp.concatenate([tokens, tokens]) if guided else tokens
    (logits, hidden), _ = Transformer(cfg).apply({"params": params}, toks[:, :-1], rows, heads="hidden")
    C, G = cfg.prefix_len, 2 if guided else 1
    logits = logits[:, C - 1:].reshape(G, tokens.shape[0], cfg.seq_len, cfg.vocab_size)
    logits = logits[0] if G == 1 else logits[1] + scale[:, None] * (logits[0] - logits[1])
    return hidden[:, C - 1:].reshape(G, tokens.shape[0], cfg.seq_len, cfg.dim), jax.nn.softmax(logits / temperature)


def head_loss(heads: Any, hidden: Array, tokens: Array, probs: Array, scale: Array,
              temperature: float) -> tuple[Array, Array]:
    """Cross-entropy of each head's (guided, tempered) proposal against the model's own distribution of the token it
    guesses (a distillation target: the sampled token's expectation, less noisy), and its top-1 agreement with the
    sampled tokens `[K]`: hidden `[G, B, T, dim]`, tokens `[B, T]`, probs `[B, T, V]`, scale `[T]` (guidance at each
    image position)."""
    K, T = medusa.num_heads(heads), tokens.shape[1]
    offset = jnp.arange(T)[:, None] + 1 + jnp.arange(K)  # [T, K]: the token head k guesses at index j
    prev = jnp.take(tokens, jnp.minimum(offset - 1, T - 1), axis=1)  # [B, T, K]: the token before it
    logits = medusa.head_logits(heads, hidden, prev[None])  # [G, B, T, K, V]
    s = scale[jnp.minimum(offset, T - 1)][..., None]
    guided = logits[0] if logits.shape[0] == 1 else logits[1] + s * (logits[0] - logits[1])  # [B, T, K, V]
    target = jnp.take(tokens, jnp.minimum(offset, T - 1), axis=1)  # [B, T, K]
    valid = (offset < T)[None]
    nll = optax.softmax_cross_entropy(guided / temperature, jnp.take(probs, jnp.minimum(offset, T - 1), axis=1))
    count = jnp.maximum(valid.sum((0, 1)) * tokens.shape[0], 1)  # [K] targets of each head in the batch
    per_head = jnp.where(valid, nll, 0.0).sum((0, 1)) / count
    acc = jnp.where(valid, guided.argmax(-1) == target, False).sum((0, 1)) / count
    return per_head.mean(), (per_head, acc)


def train_medusa(config: ml_collections.ConfigDict, workdir: str | Path) -> TrainState:
    """Train Medusa heads for the run in `config.base_workdir` into `workdir` (resuming from its checkpoint)."""
    from ar_jax.pipeline import load

    check_config(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    save_config(config, workdir)
    base = load(config.base_workdir)
    cfg, sampling = base.model_config, base.config.sampling
    logging.info("Medusa heads for %s (%s)", config.base_workdir, base.weights)
    heads = medusa.init_heads(cfg, base.params, config.medusa.num_heads, config.medusa.sequential,
                              config.medusa.width, jax.random.key(config.seed))
    tx = make_optimizer(config)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=heads, opt_state=tx.init(heads))
    ckpt = Checkpointer(workdir, keep=1)
    if ckpt.latest_step() is not None:
        state = ckpt.restore(state)
    start = int(state.step)
    writer = MetricWriter(workdir, resume_step=start)
    t0 = time.time()
    tokens, cond = distillation_set(base, config)
    guided = proc.uses_guidance(sampling.cfg_scale)
    schedule = proc.as_schedule(sampling.cfg_scale)
    scale = jax.vmap(lambda p: schedule(p, cfg.seq_len))(jnp.arange(cfg.seq_len)) if guided else jnp.ones(
        cfg.seq_len)
    temperature = 1.0 if sampling.greedy else float(sampling.temperature)
    parts = [jax.device_get(hidden_states(base.params, jnp.asarray(tokens[s:s + 256]), jax.tree.map(
        lambda x, s=s: x[s:s + 256], cond), scale, temperature, cfg=cfg, guided=guided))
        for s in range(0, len(tokens), 256)]
    hidden = np.concatenate([h for h, _ in parts], axis=1)  # [G, N, T, dim]
    probs = np.concatenate([p for _, p in parts])  # [N, T, V]
    logging.info("distillation set: %d samples in %.0f s", len(tokens), time.time() - t0)

    @jax.jit
    def step(state, hidden, tokens, probs):
        (loss, aux), grads = jax.value_and_grad(head_loss, has_aux=True)(state.params, hidden, tokens, probs, scale,
                                                                         temperature)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                          opt_state=opt_state), loss, aux

    rng = np.random.default_rng(config.seed + start)
    for i in range(start, config.num_train_steps):
        idx = rng.choice(len(tokens), config.batch_size, replace=False)
        state, loss, (per_head, acc) = step(state, jnp.asarray(hidden[:, idx]), jnp.asarray(tokens[idx]),
                                            jnp.asarray(probs[idx]))
        done = i + 1
        if done % config.log_every == 0 or done == config.num_train_steps:
            writer.write(done, loss=float(loss), **{f"head{k + 1}_nll": float(v) for k, v in enumerate(per_head)},
                         **{f"head{k + 1}_top1": float(v) for k, v in enumerate(acc)})
        if done % config.checkpoint_every == 0 or done == config.num_train_steps:
            ckpt.save(done, state)
    ckpt.close()
    writer.close()
    return state
