"""Logits processors: small objects with one method, `logits [B, V], ctx -> logits [B, V]`, composed in a tuple.

A chain is a tuple of processors applied in order (`apply`). Each processor is a `flax.struct` pytree:
its numbers (temperature, top-p mass, guidance scale, ...) are leaves, traced under `jit`, so one
compilation serves every value; which processors a chain holds, and top-k's `k`, are its structure,
so they are static. Two stages, as in Hugging Face's processors and warpers:

- *adjusters* change which token the model prefers and apply to greedy decoding too:
  `Guidance` (CFG, `[2B, V] -> [B, V]`, with a schedule over positions) and `RepetitionPenalty`;
- *warpers* shape the distribution a token is sampled from and are dropped when greedy:
  `Temperature`, `TopK`, `TopP`, `MinP`, `Typical` (built in that order by `warpers`).

Samplers turn the final logits into tokens: `Greedy` and `Categorical`, `logits [B, V], rng -> [B]`.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array


@struct.dataclass
class Context:
    """What a processor may look at besides the logits."""

    pos: Array  # int32 scalar: index of the image token being chosen, 0..length-1
    length: int = struct.field(pytree_node=False)  # image tokens per sample (cfg.seq_len)
    counts: Array | None = None  # [B, V] int32: how often each token occurs so far (only when a processor needs it)


class Processor(Protocol):
    needs_counts: bool

    def __call__(self, logits: Array, ctx: Context) -> Array: ...


# ---- plain functions (also re-exported by ar_jax.sampling) -------------------------------------------------


def kth_largest(x: Array, k: int | Array) -> Array:
    """The k-th largest value of each row of float32 `x [B, V]`, `[B, 1]`, exactly.

    Bisection over the order-preserving integer image of the float32 bits (32 compare-and-count passes over V):
    on CPUs this is about 50x faster than `lax.top_k` for a 16k vocabulary and k in the thousands.
    """
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
    key = jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)  # monotone: a < b <=> key(a) < key(b)
    lo = jnp.full(x.shape[:-1] + (1,), jnp.iinfo(jnp.int32).min, jnp.int32)  # count(key >= lo) >= k always
    hi = jnp.full(x.shape[:-1] + (1,), jnp.iinfo(jnp.int32).max, jnp.int32)

    def body(_, lohi):
        lo, hi = lohi
        mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1) + ((lo ^ hi) & 1)  # ceil((lo + hi) / 2) without overflow
        ok = jnp.sum(key >= mid, axis=-1, keepdims=True) >= k
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)

    lo, _ = jax.lax.fori_loop(0, 32, body, (lo, hi))
    back = jnp.where(lo < 0, lo ^ jnp.int32(0x7FFFFFFF), lo)
    return jax.lax.bitcast_convert_type(back, jnp.float32)


def top_k_filter(logits: Array, k: int) -> Array:
    """Keep the k largest logits `[B, V]` (ties at the k-th value kept), others to -inf."""
    return jnp.where(logits < kth_largest(logits, k), -jnp.inf, logits)


def top_p_filter(logits: Array, p: Array | float) -> Array:
    """Keep the smallest set of most likely tokens whose probability reaches p; others to -inf."""
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each sorted token
    keep = before < p
    cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < cutoff, -jnp.inf, logits)


def guide(logits: Array, cfg_scale: Array | float) -> Array:
    """CFG on a `[2B, ...]` batch `[cond; uncond]`: `u + s * (c - u)` -> `[B, ...]`."""
    cond, uncond = jnp.split(logits, 2, axis=0)
    return uncond + cfg_scale * (cond - uncond)


# ---- guidance schedules: (pos, length) -> scale --------------------------------------------------------------


@struct.dataclass
class Constant:
    """The same guidance scale at every position."""

    scale: float

    def __call__(self, pos: Array, length: int) -> Array:
        return jnp.asarray(self.scale, jnp.float32)


@struct.dataclass
class Linear:
    """Scale moving linearly from `start` (first token) to `end` (last token); `Linear(1.0, s)` ramps up."""

    start: float
    end: float

    def __call__(self, pos: Array, length: int) -> Array:
        frac = pos.astype(jnp.float32) / max(length - 1, 1)
        return self.start + (self.end - self.start) * frac


@struct.dataclass
class Interval:
    """Guidance `scale` for image tokens `start <= pos < stop`, none (scale 1) elsewhere."""

    scale: float
    start: int
    stop: int

    def __call__(self, pos: Array, length: int) -> Array:
        inside = (pos >= self.start) & (pos < self.stop)
        return jnp.where(inside, self.scale, 1.0).astype(jnp.float32)

    @classmethod
    def llamagen(cls, scale: float, cfg_interval: int) -> Interval:
        """LlamaGen's `cfg_interval=n`: the first token and the next n + 1 are guided; -1 means always."""
        return cls(scale, 0, 2**30 if cfg_interval < 0 else cfg_interval + 2)


Schedule = Constant | Linear | Interval


def as_schedule(cfg_scale: Any) -> Schedule:
    """A number becomes `Constant(number)`; a schedule is checked and its numbers made float32/int32
    (so every value shares one compilation). ValueError names the bad value."""
    if isinstance(cfg_scale, Schedule):
        values = {k: getattr(cfg_scale, k) for k in cfg_scale.__dataclass_fields__}
        for name, v in values.items():
            if not np.all(np.isfinite(np.asarray(v, np.float64))):
                raise ValueError(f"{type(cfg_scale).__name__}.{name}={v} must be finite.")
        if isinstance(cfg_scale, Interval):
            if not cfg_scale.start < cfg_scale.stop:
                raise ValueError(f"Interval(start={cfg_scale.start}, stop={cfg_scale.stop}) is empty; "
                                 "guidance applies to start <= pos < stop, so pass start < stop.")
            return Interval(np.float32(cfg_scale.scale), np.int32(cfg_scale.start), np.int32(cfg_scale.stop))
        return type(cfg_scale)(**{k: np.float32(v) for k, v in values.items()})
    if isinstance(cfg_scale, (int, float, np.number)) and not isinstance(cfg_scale, bool):
        if not np.isfinite(cfg_scale):
            raise ValueError(f"cfg_scale={cfg_scale} must be finite; use 1.0 for no guidance.")
        return Constant(np.float32(cfg_scale))
    raise ValueError(f"cfg_scale={cfg_scale!r} must be a number or a schedule "
                     "(processors.Constant, Linear or Interval).")


def uses_guidance(cfg_scale: Any) -> bool:
    """False only for the plain number 1.0 (no guidance: the unconditional half is not computed)."""
    return not (isinstance(cfg_scale, (int, float, np.number)) and cfg_scale == 1.0)


# ---- adjusters -----------------------------------------------------------------------------------------------


@struct.dataclass
class Guidance:
    """Classifier-free guidance: `[cond; uncond]` logits `[2B, V]` -> guided `[B, V]`, scale from a schedule."""

    schedule: Schedule
    needs_counts = False

    def __call__(self, logits: Array, ctx: Context) -> Array:
        return guide(logits, self.schedule(ctx.pos, ctx.length))


@struct.dataclass
class RepetitionPenalty:
    """CTRL's penalty on tokens already in the image: positive logits / penalty, negative ones * penalty."""

    penalty: float
    needs_counts = True

    def __call__(self, logits: Array, ctx: Context) -> Array:
        penalised = jnp.where(logits > 0, logits / self.penalty, logits * self.penalty)
        return jnp.where(ctx.counts > 0, penalised, logits)


# ---- warpers -------------------------------------------------------------------------------------------------


@struct.dataclass
class Temperature:
    """Divide the logits by the temperature."""

    value: float
    needs_counts = False

    def __call__(self, logits: Array, ctx: Context) -> Array:
        return logits / self.value


@struct.dataclass
class TopK:
    """Keep the k most likely tokens (k is static: it sets a shape)."""

    k: int = struct.field(pytree_node=False)
    needs_counts = False

    def __call__(self, logits: Array, ctx: Context) -> Array:
        return top_k_filter(logits, self.k)


@struct.dataclass
class TopP:
    """Nucleus sampling: the smallest set of most likely tokens whose mass reaches p."""

    p: float
    needs_counts = False

    def __call__(self, logits: Array, ctx: Context) -> Array:
        return top_p_filter(logits, self.p)


@struct.dataclass
class MinP:
    """Keep tokens whose probability is at least `p` times the most likely token's."""

    p: float
    needs_counts = False

    def __call__(self, logits: Array, ctx: Context) -> Array:
        floor = jnp.max(logits, axis=-1, keepdims=True) + jnp.log(self.p)
        return jnp.where(logits < floor, -jnp.inf, logits)


@struct.dataclass
class Typical:
    """Locally typical sampling (Meister et al.): keep the tokens whose surprisal is closest to the entropy,
    fewest first, until their mass reaches `mass`."""

    mass: float
    needs_counts = False

    def __call__(self, logits: Array, ctx: Context) -> Array:
        logp = jax.nn.log_softmax(logits, axis=-1)
        p = jnp.exp(logp)
        entropy = -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=-1, keepdims=True)
        dist = jnp.abs(-logp - entropy)  # [B, V]; inf for filtered tokens
        order = jnp.argsort(dist, axis=-1)
        sorted_p = jnp.take_along_axis(p, order, axis=-1)
        before = jnp.cumsum(sorted_p, axis=-1) - sorted_p
        sorted_dist = jnp.take_along_axis(dist, order, axis=-1)
        cutoff = jnp.max(jnp.where(before < self.mass, sorted_dist, -jnp.inf), axis=-1, keepdims=True)
        return jnp.where(dist > cutoff, -jnp.inf, logits)


# ---- samplers and chains -------------------------------------------------------------------------------------


@struct.dataclass
class Greedy:
    """The most likely token: logits `[B, V]` -> `[B]` int32 (rng unused)."""

    def __call__(self, logits: Array, rng: Array) -> Array:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)


@struct.dataclass
class Categorical:
    """A token drawn from softmax(logits): `[B, V]` -> `[B]` int32."""

    def __call__(self, logits: Array, rng: Array) -> Array:
        return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def warpers(temperature: Any, *, top_k: int = 0, top_p: Any = None, min_p: Any = None,
            typical_p: Any = None) -> tuple:
    """The sampling-only chain: temperature, then top-k (0: off), top-p, min-p, typical (None: off)."""
    chain: tuple = (Temperature(temperature),)
    if top_k:
        chain += (TopK(int(top_k)),)
    for cls, value in ((TopP, top_p), (MinP, min_p), (Typical, typical_p)):
        if value is not None:
            chain += (cls(value),)
    return chain


def apply(chain: tuple, logits: Array, ctx: Context) -> Array:
    """Run the processors of `chain` in order on logits `[B, V]` (`[2B, V]` before a `Guidance`)."""
    for proc in chain:
        logits = proc(logits, ctx)
    return logits


def apply_positions(chain: tuple, logits: Array, pos: Array, length: int) -> Array:
    """`apply` at several positions at once: logits `[B, K, V]`, pos `[K]` -> `[B', K, V]` (no counts)."""
    one = lambda lg, p: apply(chain, lg, Context(p, length))
    return jax.vmap(one, in_axes=(1, 0), out_axes=1)(logits, pos)


def apply_rows(chain: tuple, logits: Array, pos: Array, length: int) -> Array:
    """`apply_positions` with each row at its own positions: logits `[R, K, V]` (R = B, or 2B `[cond; uncond]` rows
    under guidance), pos `[B, K]` -> `[B, K, V]` (no counts)."""
    B = pos.shape[0]
    pairs = logits.reshape(logits.shape[0] // B, B, *logits.shape[1:])  # [R / B, B, K, V]
    one = lambda lg, p: apply_positions(chain, lg, p, length)[0]
    return jax.vmap(one, in_axes=(1, 0))(pairs, pos)


def needs_counts(chain: tuple) -> bool:
    """Whether any processor reads `Context.counts` (then the sampler carries them)."""
    return any(proc.needs_counts for proc in chain)


def count_tokens(tokens: Array, vocab_size: int) -> Array:
    """Occurrences `[B, V]` int32 of each token in `tokens [B, P]`."""
    return jax.nn.one_hot(tokens, vocab_size, dtype=jnp.int32).sum(axis=1)


def check_warpers(vocab_size: int, *, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                  typical_p: float = 1.0, repetition_penalty: float = 1.0) -> None:
    """ValueError naming a bad value and the setting that switches it off."""
    if int(top_k) != top_k or not 0 <= top_k <= vocab_size:
        raise ValueError(f"top_k={top_k} must be an integer in [0, vocab_size={vocab_size}]; "
                         "use 0 to switch top-k off.")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p} must be in (0, 1]; use 1.0 to switch nucleus sampling off.")
    if not 0 <= min_p <= 1:
        raise ValueError(f"min_p={min_p} must be in [0, 1]; use 0.0 to switch min-p off.")
    if not 0 < typical_p <= 1:
        raise ValueError(f"typical_p={typical_p} must be in (0, 1]; use 1.0 to switch typical sampling off.")
    if not (math.isfinite(repetition_penalty) and repetition_penalty > 0):
        raise ValueError(f"repetition_penalty={repetition_penalty} must be a finite number > 0; "
                         "use 1.0 for no penalty.")
