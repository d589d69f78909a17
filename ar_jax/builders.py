"""From a run's config to its objects: tokenizer and model config (one place, used by all)."""

from __future__ import annotations

from typing import Any

import ml_collections

from ar_jax.models.maskgit import MaskGITConfig
from ar_jax.models.pixelcnn import PixelCNNConfig
from ar_jax.models.transformer import TransformerConfig
from ar_jax.tokenizers.pixels import PixelTokenizer

MODEL_SECTIONS = ("kind", "data", "tokenizer", "model")  # config sections that fix parameter shapes
FAMILIES = ("transformer", "pixelcnn", "maskgit")  # values of config.model.family


def make_tokenizer(config: ml_collections.ConfigDict) -> Any:
    """The tokenizer named by `config.tokenizer.kind`."""
    kind = config.tokenizer.kind
    if kind == "pixels":
        return PixelTokenizer(tuple(config.data.image_shape), int(config.tokenizer.levels))
    if kind == "vq":  # a trained tokenizer run in config.tokenizer.workdir
        from ar_jax.tokenizers.vq_tokens import VQTokenizer

        return VQTokenizer.from_config(config)
    raise ValueError(f"config.tokenizer.kind={kind!r} is not known; use 'pixels' or 'vq'.")


def make_model_config(config: ml_collections.ConfigDict,
                      tokenizer: Any = None) -> TransformerConfig | PixelCNNConfig | MaskGITConfig:
    """The model-family config named by `config.model.family`, with vocabulary, length and classes from the
    tokenizer/data."""
    tokenizer = tokenizer or make_tokenizer(config)
    m = config.model
    if "family" not in m:
        raise ValueError("config.model.family is missing (a run saved before model families existed?); add "
                         "\"family\": \"transformer\" to the model section of its config.json.")
    if m.family in ("transformer", "maskgit"):  # MaskGIT: the same decoder, bidirectional, one more id ([MASK])
        maskgit = m.family == "maskgit"
        cfg = TransformerConfig(
            vocab_size=tokenizer.vocab_size + int(maskgit), seq_len=tokenizer.seq_len,
            num_classes=int(config.data.num_classes),
            dim=m.dim, num_layers=m.num_layers, num_heads=m.num_heads, num_kv_heads=m.num_kv_heads or None,
            mlp_dim=m.mlp_dim or None, rope=m.rope, rope_base=m.rope_base, cls_token_num=m.cls_token_num,
            null_class=True, token_dropout=m.token_dropout, resid_dropout=m.resid_dropout,
            ffn_dropout=m.ffn_dropout, dtype=m.dtype, causal=not maskgit)
        cfg = MaskGITConfig(cfg) if maskgit else cfg
    elif m.family == "pixelcnn":
        rows, per_row = tokenizer.grid
        width = tokenizer.image_shape[1]
        cfg = PixelCNNConfig(
            vocab_size=tokenizer.vocab_size, token_shape=(rows, width, per_row // width),
            num_classes=int(config.data.num_classes), kind=m.kind, features=m.features, num_layers=m.num_layers,
            kernel_size=m.kernel_size, first_kernel_size=m.first_kernel_size, embed_dim=m.embed_dim,
            dropout=m.dropout)
    else:
        raise ValueError(f"config.model.family={m.family!r} is not one of {FAMILIES}.")
    cfg.validate()
    return cfg
