"""The one condition interface: what a sequence is conditioned on becomes its prefix, here and nowhere else.

A condition is a pytree of arrays with the batch first, one kind per model (`TransformerConfig.condition`):

- "class": labels `[B]` int; the prefix is `cls_token_num` learned rows of the label (LlamaGen c2i), the null class
  (id `num_classes`) is the unconditional one.
- "text": prompt token ids `[B, text_len]` int, left-padded with 0 (`ar_jax.tokenizers.text`), own embedding table;
  the prefix is those rows then one begin-image row (always valid, so the position that predicts image token 0
  exists for an empty prompt too). The null condition is the empty prompt. Prefix rows get 1-D rotary angles, so
  word order is seen.
- "caption": LlamaGen t2i's projected caption features, `{"features": [B, C, F], "mask": [B, C], "null": [B]}`
  (left-padded as its `sample_t2i.py` makes them); `null` rows use the saved null caption `uncond_embedding`.

Padded prefix rows are cut from every query's keys and attend to themselves only (LlamaGen's mask), so they stay
finite and no other row sees them. Consumers (training, evaluation, samplers, pipelines) call the functions below
and never branch on the kind.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ar_jax import axes

Array = jax.Array
KINDS = ("class", "text", "caption")


def prefix_len(cfg: Any) -> int:
    """Rows before the first image token; the output at row `prefix_len - 1` predicts image token 0."""
    return cfg.text_len + 1 if cfg.condition == "text" else cfg.cls_token_num


def has_padding(cfg: Any) -> bool:
    """Whether some prefix rows can be padding (then attention needs a key mask, not just lengths)."""
    return cfg.condition != "class"


def has_null(cfg: Any) -> bool:
    """Whether the model has an unconditional (null) condition for guidance (a class model needs null_class)."""
    return cfg.null_class if cfg.condition == "class" else True


def example(cfg: Any, batch: int = 1) -> Any:
    """A condition of the right structure (for initialisation and shapes)."""
    if cfg.condition == "class":
        return jnp.zeros((batch,), jnp.int32)
    if cfg.condition == "text":
        return jnp.zeros((batch, cfg.text_len), jnp.int32)
    C = cfg.cls_token_num
    return {"features": jnp.zeros((batch, C, cfg.caption_dim), jnp.float32), "mask": jnp.ones((batch, C), bool),
            "null": jnp.zeros((batch,), bool)}


def drop(cfg: Any, cond: Any, which: Array) -> Any:
    """`cond` with the rows where `which [B]` is true replaced by the null condition (CFG's unconditional half,
    condition dropout in training)."""
    if cfg.condition == "class":
        return jnp.where(which, cfg.null_label, cond)
    if cfg.condition == "text":
        return jnp.where(which[:, None], 0, cond)
    return {**cond, "null": cond["null"] | which}


def null_like(cfg: Any, cond: Any) -> Any:
    """The null condition with `cond`'s batch (a caption keeps each row's padding mask, as LlamaGen's CFG does)."""
    return drop(cfg, cond, jnp.ones((batch_size(cond),), bool))


def batch_size(cond: Any) -> int:
    return jax.tree.leaves(cond)[0].shape[0]


def concat(*conds: Any) -> Any:
    """Conditions stacked along the batch (e.g. `[cond; null]` for classifier-free guidance)."""
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *conds)


def take(cond: Any, index: Any) -> Any:
    """Rows `index` of a host or device condition."""
    return jax.tree.map(lambda x: x[index], cond)


def repeat(cond: Any, n: int) -> Any:
    """Every row repeated `n` times in place (`[c0, c0, .., c1, ..]`), as beam search lays out its beams."""
    return jax.tree.map(lambda x: jnp.repeat(x, n, axis=0), cond)


def text_table(module: nn.Module, cfg: Any, init: Any) -> Array:
    """A text model's token table `[text_vocab_size, dim]`, declared on `module`: the prompt's rows read it, and so do
    the text rows after the image of a model trained both ways (`text_head`), which declares it once for both."""
    return module.param("text_embeddings", nn.with_logical_partitioning(init, (axes.VOCAB, axes.EMBED)),
                        (cfg.text_vocab_size, cfg.dim))


def embed(module: nn.Module, cfg: Any, cond: Any, init: Any, table: Array | None = None) -> tuple[Array, Array | None]:
    """The prefix rows `[B, C, dim]` of `cond` and which are real `[B, C]` (None: all of them), declaring the
    condition's parameters on `module` (`init`: the weight initialiser; `table`: a text table declared already)."""
    D = cfg.dim
    if cfg.condition == "class":
        table = module.param("cls_embedding", nn.with_logical_partitioning(
            init, (axes.CLASSES, axes.CLS_TOKENS, axes.EMBED)), (cfg.class_rows, cfg.cls_token_num, D))
        return jnp.take(table, cond, axis=0), None
    if cfg.condition == "text":
        table = text_table(module, cfg, init) if table is None else table
        begin = module.param("begin_image", nn.with_logical_partitioning(init, (axes.EMBED,)), (D,))
        B = cond.shape[0]
        x = jnp.concatenate([jnp.take(table, cond, axis=0), jnp.broadcast_to(begin, (B, 1, D))], axis=1)
        valid = jnp.concatenate([cond != 0, jnp.ones((B, 1), bool)], axis=1)
        return x, valid
    null = module.param("uncond_embedding", nn.with_logical_partitioning(
        nn.initializers.normal(cfg.caption_dim ** -0.5), (axes.CLS_TOKENS, None)), (cfg.cls_token_num, cfg.caption_dim))
    fc1 = module.param("cap_fc1", nn.with_logical_partitioning(init, (None, axes.EMBED)), (cfg.caption_dim, D))
    fc2 = module.param("cap_fc2", nn.with_logical_partitioning(init, (axes.EMBED, None)), (D, D))
    feats = jnp.where(cond["null"][:, None, None], null[None], cond["features"])
    h = nn.gelu(jnp.dot(feats.astype(jnp.float32), fc1), approximate=True)
    return jnp.dot(h, fc2), cond["mask"].astype(bool)


def check(cfg: Any, cond: Any) -> Any:
    """`cond` as host arrays of the right dtypes, or ValueError naming the bad value and the fix (before any
    compilation)."""
    if cfg.condition == "class":
        return check_labels(cond, cfg.num_classes)
    if cfg.condition == "text":
        ids = np.asarray(cond)
        if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] != cfg.text_len:
            raise ValueError(f"a text condition is prompt ids [B, text_len={cfg.text_len}] (left-padded with 0), "
                             f"got shape {ids.shape}; pass prompts= to the pipeline to tokenize them.")
        if ids.size and (ids.min() < 0 or ids.max() >= cfg.text_vocab_size):
            raise ValueError(f"prompt ids must be in [0, text_vocab_size={cfg.text_vocab_size}), got "
                             f"{ids.min()}..{ids.max()}.")
        return ids.astype(np.int32)
    if not isinstance(cond, dict) or set(cond) - {"features", "mask", "null"} or "features" not in cond:
        raise ValueError("a caption condition is {'features': [B, C, F], 'mask': [B, C]} (optional 'null': [B]).")
    f = np.asarray(cond["features"], np.float32)
    B, C = f.shape[:2] if f.ndim == 3 else (0, 0)
    if f.ndim != 3 or B == 0 or C != cfg.cls_token_num or f.shape[2] != cfg.caption_dim:
        raise ValueError(f"caption features must be [B, cls_token_num={cfg.cls_token_num}, caption_dim="
                         f"{cfg.caption_dim}], got shape {f.shape}.")
    mask = np.asarray(cond.get("mask", np.ones((B, C))))
    if mask.shape != (B, C):
        raise ValueError(f"the caption mask must be [B={B}, {C}], got shape {mask.shape}.")
    return {"features": f, "mask": mask.astype(bool), "null": np.asarray(cond.get("null", np.zeros(B)), bool)}


def check_labels(labels: Any, num_classes: int) -> np.ndarray:
    """Class labels as int32 `[B]`, or ValueError naming the bad label and the valid range."""
    if isinstance(labels, dict):
        raise ValueError("this is a class-conditional model: pass class labels [B], not caption features.")
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] == 0:
        raise ValueError(f"labels must be a non-empty 1-D array of class ids, got shape {labels.shape} (this is a "
                         "class-conditional model; prompt ids need a text run).")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}.")
    hi = max(num_classes, 1)  # an unconditional model has one class: its null label 0
    bad = labels[(labels < 0) | (labels >= hi)]
    if bad.size:
        raise ValueError(f"label {bad[0]} is outside [0, num_classes={num_classes}); pass class ids 0..{hi - 1}.")
    return labels.astype(np.int32)


def of_examples(cfg: Any, labels: Any, captions: Any, text_tokenizer: Any = None) -> Any:
    """The condition of a dataset's examples: their labels for a class model, their captions for a text model."""
    if cfg.condition == "text":
        return make(cfg, prompts=list(captions) if captions is not None else None, text_tokenizer=text_tokenizer)
    return make(cfg, labels=labels)


def make(cfg: Any, labels: Any = None, prompts: Any = None, text_tokenizer: Any = None) -> Any:
    """The condition of a batch from what a user passes: class `labels` for a class model, `prompts` (strings,
    tokenized by `text_tokenizer`) for a text model. ValueError naming the mismatch and the fix otherwise."""
    if cfg.condition == "class":
        if prompts is not None:
            raise ValueError("prompts were given to a class-conditional run; pass labels (class ids 0.."
                             f"{max(cfg.num_classes, 1) - 1}), or load a text run (config.model.condition='text').")
        if labels is None:
            raise ValueError("a class-conditional run needs labels: pass class ids, e.g. pipe.sample([0, 1]).")
        return check_labels(labels, cfg.num_classes)
    if cfg.condition == "text":
        if labels is not None:
            raise ValueError("labels were given to a text-conditioned run; pass prompts=[...] (strings) instead.")
        if prompts is None or isinstance(prompts, str) or len(prompts) == 0:
            raise ValueError("a text-conditioned run needs a non-empty list of prompts, e.g. "
                             "pipe.sample(prompts=['a red circle']); got " + repr(prompts) + ".")
        ids = text_tokenizer.check_length(list(prompts), cfg.text_len)
        return text_tokenizer.pad_left(ids, cfg.text_len)[0].astype(np.int32)
    raise ValueError("a caption-feature run takes caption features, not labels or prompts: see "
                     "ar_jax.convert.llamagen (LlamaGen t2i).")
