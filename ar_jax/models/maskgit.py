"""MaskGIT (Chang et al., 2022): the one `Transformer`, bidirectional, with a [MASK] token; decoded in parallel.

Training: per example draw `r ~ U(0, 1)`, mask `max(1, ceil(cos(pi/2 r) N))` of its N tokens uniformly at random
(input id `mask_id`), and take the cross-entropy on the masked positions only; the loss is the mean over all
masked tokens of the batch. The logit of `mask_id` is never a prediction (it is sliced off).

Decoding (`ar_jax.decode.maskgit`), `steps` iterations inside one `lax.scan`: predict every masked token at once,
sample them (guidance, temperature, top-k/p, min-p, typical as in `ar_jax.decode.processors`), score each by the
log-prob of its sampled token plus Gumbel noise of scale `choice_temperature * (1 - (t + 1) / steps)`, and keep
masked the `m_t` least confident, `m_t = min(floor(M cos(pi/2 (t + 1) / steps)), M - t - 1)` (floored at 0; `M` the
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
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from ar_jax import backends
from ar_jax.backends import Backend
from ar_jax.models import losses
from ar_jax.models.transformer import Transformer, TransformerConfig, init_params, param_logical_axes

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class MaskGITConfig:
    """A bidirectional `TransformerConfig` (`net`, vocabulary = image tokens + [MASK]); the model-family protocol."""

    net: TransformerConfig  # causal=False, vocab_size = image tokens + 1 (the last id is [MASK])
    eval_levels: int = 4  # mask ratios of the deterministic masked-token NLL (token_nll without rng)

    exact_likelihood: ClassVar[bool] = False  # token_nll is a masked-token NLL, not an exact likelihood

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

    @property
    def condition(self) -> str:
        """The net's condition (`ar_jax.models.conditions`); so are the fields below."""
        return self.net.condition

    @property
    def text_len(self) -> int:
        return self.net.text_len

    @property
    def text_vocab_size(self) -> int:
        return self.net.text_vocab_size

    @property
    def caption_dim(self) -> int:
        return self.net.caption_dim

    @property
    def cls_token_num(self) -> int:
        return self.net.cls_token_num

    # The model-family protocol.
    def init(self, rng: Array) -> tuple[Any, Any]:
        """`(params, logical_axes)` of the bidirectional transformer."""
        self.validate()
        return init_params(self.net, rng)

    def logical_axes(self) -> Any:
        return param_logical_axes(self.net)

    def logits(self, params: Any, inputs: Array, cond: Any, rng: Array | None = None,
               backend: Backend | None = None) -> Array:
        """Inputs `[B, T]` (image ids or `mask_id`) -> logits `[B, T, vocab_size]` of each position's token."""
        rngs = None if rng is None else {"dropout": rng}
        out, _ = Transformer(self.net, backend or backends.XLA).apply({"params": params}, inputs, cond,
                                                                      deterministic=rng is None, rngs=rngs)
        return out[:, self.net.prefix_len:, : self.vocab_size]

    def token_nll(self, params: Any, tokens: Array, labels: Array, rng: Array | None = None,
                  backend: Backend | None = None) -> Array:
        """`[B, T]` whose mean is the training loss (rng given) or whose row sum / T is the eval NLL (rng None).

        With rng: cross-entropy on cosine-scheduled random masks, zero at unmasked positions, scaled so the
        mean over `[B, T]` is the mean NLL per masked token of the batch. Without: the deterministic masked-token
        NLL of the module docstring.
        """
        B, T = tokens.shape
        if rng is not None:
            mask_rng, drop_rng = jax.random.split(rng)
            mask = training_mask(mask_rng, B, T)
            nll = self._masked_nll(params, tokens, labels, mask, drop_rng, backend)
            return nll * (B * T / jnp.sum(mask))
        perm = jax.random.permutation(jax.random.key(0), T)
        counts = [max(1, math.ceil(math.cos(math.pi / 2 * (k + 0.5) / self.eval_levels) * T))
                  for k in range(self.eval_levels)]
        ranks = jnp.zeros((T,), jnp.int32).at[perm].set(jnp.arange(T))  # position -> rank in the permutation
        masks = ranks[None] < jnp.asarray(counts)[:, None]  # [K, T]: the first n_k positions of perm
        per_level = jax.lax.map(
            lambda m: self._masked_nll(params, tokens, labels, jnp.broadcast_to(m, (B, T)), None, backend), masks)
        return per_level.sum(0) * (T / sum(counts))

    def _masked_nll(self, params: Any, tokens: Array, labels: Array, mask: Array, rng: Array | None,
                    backend: Backend | None = None) -> Array:
        """NLL `[B, T]` of the tokens at `mask [B, T]` given the others (0 elsewhere)."""
        nll = losses.token_nll(self.logits(params, jnp.where(mask, self.mask_id, tokens), labels, rng, backend),
                               tokens)
        return jnp.where(mask, nll, 0.0)

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
