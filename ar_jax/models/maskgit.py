"""MaskGIT (Chang et al., 2022): the one `Transformer`, bidirectional, with a [MASK] token; decoded in parallel.

Training: per example draw `r ~ U(0, 1)`, mask `max(1, ceil(cos(pi/2 r) N))` of its N tokens uniformly at random
(input id `mask_id`), and take the cross-entropy on the masked positions only; the loss is the mean over all
masked tokens of the batch. The logit of `mask_id` is never a prediction (it is sliced off).

Decoding (`generate`), `steps` iterations inside one `lax.scan`: predict every masked token at once, sample
them (guidance, temperature, top-k/p, min-p, typical as in `ar_jax.processors`), score each by the log-prob of
its sampled token plus Gumbel noise of scale `choice_temperature * (1 - (t + 1) / steps)`, and keep masked the
`m_t` least confident, `m_t = min(floor(M cos(pi/2 (t + 1) / steps)), M - t - 1)` (floored at 0; `M` the
row's masked count at the start), so at least one token is revealed per step and none stays masked after the
last. Revealed and given tokens are never re-masked nor changed. Inpainting: `given [B, T]` tokens where
`known [B, T]` is true are fixed; `prefix [B, P]` fixes the first P (so `pipe.complete` works).

MaskGIT has no exact likelihood. `token_nll` without rng is a deterministic *masked-token* NLL: the mean NLL of
the masked tokens over `eval_levels` mask ratios `r_k = (k + 1/2) / K` of the training schedule, each masking
the first `n_k` positions of one fixed random permutation; its sum over a row is `seq_len` times that mean, so
`sum / seq_len` is nats per masked token. It is reported as `masked_bits_per_token`, never as bits/dim.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ar_jax import processors as proc
from ar_jax.models import losses
from ar_jax.models.transformer import Transformer, TransformerConfig, init_params, param_logical_axes

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class MaskGITConfig:
    """A bidirectional `TransformerConfig` (`net`, vocabulary = image tokens + [MASK]); the model-family protocol."""

    net: TransformerConfig  # causal=False, vocab_size = image tokens + 1 (the last id is [MASK])
    eval_levels: int = 4  # mask ratios of the deterministic masked-token NLL (token_nll without rng)

    exact_likelihood: ClassVar[bool] = False  # token_nll is a masked-token NLL, not an exact likelihood
    sampling_settings: ClassVar[tuple[str, ...]] = (
        "temperature", "top_k", "top_p", "greedy", "cfg_scale", "min_p", "typical_p", "repetition_penalty",
        "steps", "choice_temperature", "given", "known")

    def replace(self, **kw: Any) -> MaskGITConfig:
        return dataclasses.replace(self, **kw)

    @property
    def vocab_size(self) -> int:
        """Image-token vocabulary (without [MASK])."""
        return self.net.vocab_size - 1

    @property
    def mask_id(self) -> int:
        return self.net.vocab_size - 1

    @property
    def seq_len(self) -> int:
        return self.net.seq_len

    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    @property
    def null_label(self) -> int:
        return self.net.null_label

    @property
    def null_class(self) -> bool:
        return self.net.null_class

    # The model-family protocol.
    def init(self, rng: Array) -> tuple[Any, Any]:
        """`(params, logical_axes)` of the bidirectional transformer."""
        self.validate()
        return init_params(self.net, rng)

    def logical_axes(self) -> Any:
        return param_logical_axes(self.net)

    def logits(self, params: Any, inputs: Array, labels: Array, rng: Array | None = None) -> Array:
        """Inputs `[B, T]` (image ids or `mask_id`) -> logits `[B, T, vocab_size]` of each position's token."""
        out, _ = Transformer(self.net).apply({"params": params}, inputs, labels, deterministic=rng is None,
                                             rngs=None if rng is None else {"dropout": rng})
        return out[:, self.net.cls_token_num:, : self.vocab_size]

    def token_nll(self, params: Any, tokens: Array, labels: Array, rng: Array | None = None) -> Array:
        """`[B, T]` whose mean is the training loss (rng given) or whose row sum / T is the eval NLL (rng None).

        With rng: cross-entropy on cosine-scheduled random masks, zero at unmasked positions, scaled so the
        mean over `[B, T]` is the mean NLL per masked token of the batch. Without: the deterministic masked-token
        NLL of the module docstring.
        """
        B, T = tokens.shape
        if rng is not None:
            mask_rng, drop_rng = jax.random.split(rng)
            mask = training_mask(mask_rng, B, T)
            nll = self._masked_nll(params, tokens, labels, mask, drop_rng)
            return nll * (B * T / jnp.sum(mask))
        perm = jax.random.permutation(jax.random.key(0), T)
        counts = [max(1, math.ceil(math.cos(math.pi / 2 * (k + 0.5) / self.eval_levels) * T))
                  for k in range(self.eval_levels)]
        ranks = jnp.zeros((T,), jnp.int32).at[perm].set(jnp.arange(T))  # position -> rank in the permutation
        masks = ranks[None] < jnp.asarray(counts)[:, None]  # [K, T]: the first n_k positions of perm
        per_level = jax.lax.map(
            lambda m: self._masked_nll(params, tokens, labels, jnp.broadcast_to(m, (B, T)), None), masks)
        return per_level.sum(0) * (T / sum(counts))

    def _masked_nll(self, params: Any, tokens: Array, labels: Array, mask: Array, rng: Array | None) -> Array:
        """NLL `[B, T]` of the tokens at `mask [B, T]` given the others (0 elsewhere)."""
        nll = losses.token_nll(self.logits(params, jnp.where(mask, self.mask_id, tokens), labels, rng), tokens)
        return jnp.where(mask, nll, 0.0)

    def generate(self, params: Any, labels: Any, rng: Array, **settings: Any) -> Array:
        """Sampled tokens `[B, seq_len]` (see `ar_jax.models.maskgit.generate` for the settings)."""
        return generate(params, self, labels, rng, **settings)

    def validate(self) -> None:
        """Raise ValueError naming the bad field and the fix."""
        self.net.validate()
        if self.net.causal:
            raise ValueError("MaskGIT needs a bidirectional transformer: build its net with causal=False.")
        if self.vocab_size < 2:
            raise ValueError(f"net.vocab_size={self.net.vocab_size} must hold >= 2 image tokens plus [MASK].")
        if self.eval_levels < 1:
            raise ValueError(f"eval_levels={self.eval_levels} must be >= 1.")


def training_mask(rng: Array, batch: int, length: int) -> Array:
    """bool `[B, T]`: per row `max(1, ceil(cos(pi/2 r) T))` positions, `r ~ U(0, 1)`, chosen uniformly."""
    kr, kp = jax.random.split(rng)
    r = jax.random.uniform(kr, (batch, 1))
    n = jnp.maximum(1, jnp.ceil(jnp.cos(jnp.pi / 2 * r) * length)).astype(jnp.int32)  # [B, 1]
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(kp, (batch, length)), axis=-1), axis=-1)
    return ranks < n


def masked_after(num_masked: np.ndarray, steps: int) -> np.ndarray:
    """Masked count after each step, int32 `[steps, B]`, for rows starting with `num_masked [B]` masked tokens
    (computed on the host in float64, so the schedule is exact)."""
    t = np.arange(1, steps + 1)[:, None]  # [steps, 1]
    m = np.asarray(num_masked, np.int64)[None]
    cos = np.floor(m * np.cos(np.pi / 2 * t / steps)).astype(np.int64)
    return np.maximum(np.minimum(cos, m - t), 0).astype(np.int32)


@functools.partial(jax.jit, static_argnames=("cfg", "steps", "greedy", "use_cfg", "history"))
def _decode(params: Any, labels: Array, given: Array, known: Array, schedule: Array, rng: Array, chain: tuple,
            choice_temperature: Array, *, cfg: MaskGITConfig, steps: int, greedy: bool, use_cfg: bool,
            history: bool = False) -> tuple[Array, Any]:
    """tokens `[B, T]`, and (if history) the tokens and masks after each step, each `[steps, B, T]`.

    `schedule [steps, B]`: how many tokens stay masked after each step (`masked_after`)."""
    B, T = given.shape
    rows = jnp.concatenate([labels, jnp.full_like(labels, cfg.null_label)]) if use_cfg else labels
    sampler = proc.Greedy() if greedy else proc.Categorical()

    def step(carry, inp):
        tokens, masked = carry  # [B, T] int32, [B, T] bool
        t, key = inp
        ks, kg = jax.random.split(key)
        inputs = jnp.where(masked, cfg.mask_id, tokens)
        logits = cfg.logits(params, jnp.concatenate([inputs, inputs]) if use_cfg else inputs, rows)
        logits = proc.apply(chain, logits, proc.Context(t, steps))  # [B, T, V]
        sampled = sampler(logits, ks)
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), sampled[..., None], -1)[..., 0]
        noise = choice_temperature * (1.0 - (t + 1) / steps) * jax.random.gumbel(kg, (B, T))
        confidence = jnp.where(masked, logp + noise, jnp.inf)
        ranks = jnp.argsort(jnp.argsort(confidence, axis=-1), axis=-1)
        tokens = jnp.where(masked, sampled, tokens)
        masked = ranks < schedule[t][:, None]
        return (tokens, masked), ((jnp.where(masked, cfg.mask_id, tokens), masked) if history else None)

    keys = jax.random.split(rng, steps)
    (tokens, _), hist = jax.lax.scan(step, (given, ~known), (jnp.arange(steps), keys))
    return tokens, hist


def check_settings(cfg: MaskGITConfig, steps: Any, choice_temperature: Any, repetition_penalty: float) -> None:
    """ValueError naming a bad MaskGIT decoding setting and the fix (before compilation)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= cfg.seq_len:
        raise ValueError(f"steps={steps!r} must be an integer in [1, seq_len={cfg.seq_len}] (MaskGIT uses 8-12).")
    if not (isinstance(choice_temperature, (int, float, np.number)) and math.isfinite(choice_temperature)
            and choice_temperature >= 0):
        raise ValueError(f"choice_temperature={choice_temperature!r} must be a finite number >= 0 (0: no noise in "
                         "the choice of which tokens to reveal; MaskGIT uses 4.5).")
    if repetition_penalty != 1.0:
        raise ValueError(f"repetition_penalty={repetition_penalty} is not supported by MaskGIT decoding (tokens are "
                         "sampled in parallel); use 1.0.")


def _given_and_known(cfg: MaskGITConfig, batch: int, given: Any, known: Any, prefix: Any) -> tuple[Any, Any]:
    """Normalise (given, known) / prefix to int32 `[B, T]` and bool `[B, T]`, or ValueError."""
    T = cfg.seq_len
    if prefix is not None:
        if given is not None or known is not None:
            raise ValueError("pass either prefix or given/known, not both.")
        prefix = np.asarray(prefix)
        if prefix.ndim != 2 or prefix.shape[0] != batch or prefix.shape[1] >= T:
            raise ValueError(f"prefix must be [B={batch}, P] tokens with P < seq_len={T}, got shape {prefix.shape}.")
        given = np.zeros((batch, T), np.int32)
        given[:, : prefix.shape[1]] = prefix
        known = np.zeros((batch, T), bool)
        known[:, : prefix.shape[1]] = True
    elif (given is None) != (known is None):
        raise ValueError("inpainting needs both given (tokens [B, T]) and known (bool [B, T]); pass both or neither.")
    elif given is None:
        return np.zeros((batch, T), np.int32), np.zeros((batch, T), bool)
    given, known = np.asarray(given).reshape(batch, -1), np.asarray(known).reshape(batch, -1)
    if given.shape != (batch, T) or known.shape != (batch, T):
        raise ValueError(f"given and known must be [B={batch}, seq_len={T}], got {given.shape} and {known.shape}.")
    if known.dtype != bool:
        raise ValueError(f"known must be a boolean mask (True: token given), got dtype {known.dtype}.")
    kept = given[known]
    if kept.size and (kept.min() < 0 or kept.max() >= cfg.vocab_size):
        raise ValueError(f"given tokens must be in [0, vocab_size={cfg.vocab_size}) where known, got "
                         f"{kept.min()}..{kept.max()}.")
    return np.where(known, given, 0).astype(np.int32), known


def generate(params: Any, cfg: MaskGITConfig, labels: Any, rng: Array, *, steps: int = 10,
             choice_temperature: float = 4.5, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             greedy: bool = False, cfg_scale: Any = 1.0, min_p: float = 0.0, typical_p: float = 1.0,
             repetition_penalty: float = 1.0, given: Any = None, known: Any = None, prefix: Any = None,
             return_history: bool = False) -> Array | tuple[Array, tuple[Array, Array]]:
    """Image tokens `[B, seq_len]` for class `labels [B]` by `steps` parallel decoding iterations.

    `given [B, T]` / `known [B, T]` (inpainting) or `prefix [B, P]` fix tokens; a guidance schedule's position is
    the step (`Linear(1, s)` ramps over steps). `return_history` adds the tokens (`mask_id` where masked) and
    the masks after each step, `[steps, B, T]` each. One compilation per (batch, steps, static choices).
    """
    from ar_jax.sampling import SamplingParams, check_labels

    SamplingParams(temperature, top_k, top_p, greedy, cfg_scale, min_p, typical_p).validate(cfg.vocab_size)
    check_settings(cfg, steps, choice_temperature, repetition_penalty)
    labels = check_labels(labels, cfg)
    given, known = _given_and_known(cfg, labels.shape[0], given, known, prefix)
    use_cfg = proc.uses_guidance(cfg_scale)
    if use_cfg and not cfg.null_class:
        raise ValueError(f"cfg_scale={cfg_scale} needs a model trained with a null class; use cfg_scale=1.0.")
    chain: tuple = (proc.Guidance(proc.as_schedule(cfg_scale)),) if use_cfg else ()
    if not greedy:
        chain += proc.warpers(np.float32(temperature), top_k=int(top_k),
                              top_p=np.float32(top_p) if top_p < 1 else None,
                              min_p=np.float32(min_p) if min_p > 0 else None,
                              typical_p=np.float32(typical_p) if typical_p < 1 else None)
    tokens, hist = _decode(params, jnp.asarray(labels), jnp.asarray(given), jnp.asarray(known),
                           jnp.asarray(masked_after((~known).sum(1), int(steps))), rng, chain,
                           jnp.float32(choice_temperature), cfg=cfg, steps=int(steps), greedy=bool(greedy),
                           use_cfg=use_cfg, history=return_history)
    return (tokens, hist) if return_history else tokens
