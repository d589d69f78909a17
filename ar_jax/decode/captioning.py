"""Image-to-text: prefill an image's tokens, then decode its caption from the same KV cache in one compiled loop.

A model trained both ways (`TransformerConfig.text_head`) reads a caption after the image of the null (empty)
prompt: `[empty prompt, begin_image, image tokens, bos, caption.., eos]` (`ar_jax/models/transformer.py`). `caption`
prefills everything up to `bos` in one call, then emits one text token per step of a `lax.while_loop` that stops
when every row has emitted `eos` (at most `text_len + 1` steps); a row that finished emits padding (0) from then on.
Text positions read the text head only, so no image code can be sampled there; padding and `bos` are never sampled
either (they are never targets). `caption_logprob` teacher-forces a given caption instead: log p(caption, eos | image).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ar_jax import backends
from ar_jax.backends import Backend, Prepared
from ar_jax.decode import processors as proc
from ar_jax.models.transformer import Transformer, TransformerConfig, init_cache, prepare

Array = jax.Array
PAD = 0  # text padding id (`ar_jax.tokenizers.text`), what a finished row emits


def check_model(cfg: Any) -> None:
    """ValueError naming `config.model.text_head` unless `cfg` is a transformer trained to predict text."""
    if not getattr(cfg, "text_head", False):
        raise ValueError("this run was trained without the image-to-text direction (config.model.text_head=False), "
                         "so it cannot caption; train a run both ways, e.g. configs/scenes_any.py.")


def check_tokens(cfg: TransformerConfig, tokens: Any) -> np.ndarray:
    """Image tokens as int32 `[B, seq_len]` (B >= 1), or ValueError naming the shape or range and the fix."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] != cfg.seq_len:
        raise ValueError(f"image tokens must be [B >= 1, seq_len={cfg.seq_len}], got shape {tokens.shape}; pass "
                         "at least one image.")
    if not np.issubdtype(tokens.dtype, np.integer) or tokens.min() < 0 or tokens.max() >= cfg.vocab_size:
        raise ValueError(f"image tokens must be integers in [0, vocab_size={cfg.vocab_size}), got {tokens.dtype} "
                         f"{tokens.min()}..{tokens.max()}.")
    return tokens.astype(np.int32)


def restrict(logits: Array, bos_id: int) -> Array:
    """Text logits `[B, V_text]` with padding and `bos` removed: what a caption position may emit."""
    return logits.at[:, jnp.array([PAD, bos_id])].set(-jnp.inf)


@functools.partial(jax.jit, static_argnames=("cfg", "bos_id", "eos_id", "top_k", "use_top_p", "greedy"))
def _caption(prepared: Prepared, tokens: Array, rng: Array, temperature: Array, top_p: Array, *,
             cfg: TransformerConfig, bos_id: int, eos_id: int, top_k: int, use_top_p: bool,
             greedy: bool) -> Array:
    """Text ids `[B, text_len + 1]`: the caption, `eos`, then padding (no `eos` if a row never emitted one)."""
    params, model = prepared.params, Transformer(cfg, prepared.backend)
    B = tokens.shape[0]
    C, T, N = cfg.prefix_len, cfg.seq_len, cfg.suffix_len
    null = jnp.zeros((B, cfg.text_len), jnp.int32)  # the empty prompt: the image part is unconditional
    bos = jnp.full((B, 1), bos_id, jnp.int32)
    full = jnp.full((B,), C + T, jnp.int32) if cfg.image_context == "full" else None  # the image both ways
    logits, cache = model.apply({"params": params}, tokens, null, text=bos, start=0, cache=init_cache(cfg, B),
                                heads="text", full_prefix=full)
    warp = () if greedy else proc.warpers(temperature, top_k=top_k, top_p=top_p if use_top_p else None)
    sampler = proc.Greedy() if greedy else proc.Categorical()

    def pick(logits, i, done):  # [B, V_text] -> [B]
        logits = proc.apply(warp, restrict(logits, bos_id), proc.Context(i, N))
        return jnp.where(done, PAD, sampler(logits, jax.random.fold_in(rng, i)))

    def body(state):
        i, logits, cache, out, done = state
        tok = pick(logits, i, done)
        nxt, cache = model.apply({"params": params}, None, None, text=tok[:, None], start=C + T + 1 + i,
                                 cache=cache, heads="text")
        return i + 1, nxt[:, -1], cache, out.at[:, i].set(tok), done | (tok == eos_id)

    state = (jnp.int32(0), logits[:, -1], cache, jnp.full((B, N), PAD, jnp.int32), jnp.zeros((B,), bool))
    i, logits, _, out, done = jax.lax.while_loop(lambda s: (s[0] < N - 1) & ~s[4].all(), body, state)
    return out.at[:, N - 1].set(jnp.where(i == N - 1, pick(logits, i, done), out[:, N - 1]))


def caption(params: Any, cfg: TransformerConfig, tokens: Any, rng: Array, *, bos_id: int, eos_id: int,
            greedy: bool = True, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Array:
    """Caption ids `[B, text_len + 1]` of image tokens `[B, seq_len]`: greedy, or sampled with temperature, top-k and
    top-p (checked before compiling; one compilation per batch size and static choice)."""
    check_model(cfg)
    tokens = check_tokens(cfg, tokens)
    if greedy and (temperature != 1.0 or top_k or top_p != 1.0):
        raise ValueError(f"temperature={temperature}, top_k={top_k}, top_p={top_p} do nothing with greedy=True; "
                         "pass greedy=False to sample, or leave them at 1.0, 0, 1.0.")
    if not greedy and not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0; for deterministic captions pass greedy=True.")
    proc.check_warpers(cfg.text_vocab_size, top_k=top_k, top_p=top_p)
    for name, i in (("bos_id", bos_id), ("eos_id", eos_id)):
        if not 0 < i < cfg.text_vocab_size:
            raise ValueError(f"{name}={i} is not a text id in [1, text_vocab_size={cfg.text_vocab_size}); pass the "
                             "run's text tokenizer's.")
    return _caption(prepare(params), jnp.asarray(tokens), rng, jnp.float32(temperature), jnp.float32(top_p), cfg=cfg,
                    bos_id=int(bos_id), eos_id=int(eos_id), top_k=int(top_k), use_top_p=top_p < 1.0,
                    greedy=bool(greedy))


@functools.partial(jax.jit, static_argnames=("cfg", "backend"))
def _logprob(params: Any, tokens: Array, text: Array, *, cfg: TransformerConfig, backend: Backend | None) -> Array:
    null = jnp.zeros((tokens.shape[0], cfg.text_len), jnp.int32)
    _, nll = cfg.sequence_nll(params, tokens, null, text, backend=backend,
                              i2t=jnp.ones((tokens.shape[0],), bool))
    return -jnp.sum(jnp.where(text[:, 1:] != PAD, nll, 0.0), axis=-1)


def caption_logprob(params: Any, cfg: TransformerConfig, tokens: Any, text: Any, batch_size: int = 256,
                    backend: Backend | None = None) -> np.ndarray:
    """log p(caption, eos | image) in nats `[B]`, teacher-forced: image tokens `[B, seq_len]`, `text [B, text_len + 2]`
    as `TextTokenizer.pad_caption` makes it (`[bos, caption.., eos, 0..]`); in padded batches of `batch_size` (one
    compilation). `backend`: where the params live."""
    check_model(cfg)
    tokens = check_tokens(cfg, tokens)
    text = np.asarray(text)
    if text.shape != (tokens.shape[0], cfg.text_len + 2):
        raise ValueError(f"captions must be ids [B={tokens.shape[0]}, text_len + 2={cfg.text_len + 2}] "
                         f"([bos, caption.., eos, 0..]: TextTokenizer.pad_caption), got shape {text.shape}.")
    if text.min() < 0 or text.max() >= cfg.text_vocab_size:
        raise ValueError(f"caption ids must be in [0, text_vocab_size={cfg.text_vocab_size}), got "
                         f"{text.min()}..{text.max()}.")
    backend = backend or backends.for_arrays(params)
    bs = min(batch_size, len(tokens))
    out = []
    for i in range(0, len(tokens), bs):
        t, x = tokens[i:i + bs], text[i:i + bs].astype(np.int32)
        pad = bs - len(t)
        t, x = (np.concatenate([a, np.repeat(a[:1], pad, 0)]) for a in (t, x))
        out.append(np.asarray(_logprob(params, t, x, cfg=cfg, backend=backend))[: bs - pad])
    return np.concatenate(out)
