"""From a run's config to its objects: tokenizer and transformer config (one place, used by all)."""

from __future__ import annotations

import ml_collections

from ar_jax.models.transformer import TransformerConfig
from ar_jax.tokenizers.pixels import PixelTokenizer

MODEL_SECTIONS = ("kind", "data", "tokenizer", "model")  # config sections that fix parameter shapes


def make_tokenizer(config: ml_collections.ConfigDict) -> PixelTokenizer:
    """The tokenizer named by `config.tokenizer.kind`."""
    kind = config.tokenizer.kind
    if kind == "pixels":
        return PixelTokenizer(tuple(config.data.image_shape), int(config.tokenizer.levels))
    raise ValueError(f"config.tokenizer.kind={kind!r} is not known; use 'pixels'.")


def make_model_config(config: ml_collections.ConfigDict, tokenizer: PixelTokenizer | None = None) -> TransformerConfig:
    """TransformerConfig from `config.model`, with vocabulary, length and classes from the tokenizer/data."""
    tokenizer = tokenizer or make_tokenizer(config)
    m = config.model
    cfg = TransformerConfig(
        vocab_size=tokenizer.vocab_size, seq_len=tokenizer.seq_len, num_classes=int(config.data.num_classes),
        dim=m.dim, num_layers=m.num_layers, num_heads=m.num_heads, num_kv_heads=m.num_kv_heads or None,
        mlp_dim=m.mlp_dim or None, rope=m.rope, rope_base=m.rope_base, cls_token_num=m.cls_token_num,
        null_class=True, token_dropout=m.token_dropout, resid_dropout=m.resid_dropout,
        ffn_dropout=m.ffn_dropout, dtype=m.dtype)
    cfg.validate()
    return cfg
