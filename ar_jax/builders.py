"""From a run's config to its objects: tokenizer and model config (one place, used by all)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from ar_jax.models.maskgit import MaskGITConfig
from ar_jax.models.pixelcnn import PixelCNNConfig
from ar_jax.models.pixelcnn_pp import PixelCNNPPConfig
from ar_jax.models.transformer import TransformerConfig
from ar_jax.tokenizers.palette import PALETTE_FILE, PaletteTokenizer
from ar_jax.tokenizers.pixels import PixelTokenizer

MODEL_SECTIONS = ("kind", "data", "tokenizer", "model")  # config sections that fix parameter shapes
FAMILIES = ("transformer", "pixelcnn", "pixelcnn_pp", "maskgit")  # values of config.model.family
ModelConfig = TransformerConfig | PixelCNNConfig | PixelCNNPPConfig | MaskGITConfig


def make_tokenizer(config: ml_collections.ConfigDict, workdir: str | Path | None = None) -> Any:
    """The tokenizer named by `config.tokenizer.kind`; a palette is read from the run's `workdir`."""
    kind = config.tokenizer.kind
    if kind == "pixels":
        return PixelTokenizer(tuple(config.data.image_shape), int(config.tokenizer.levels))
    if kind == "palette":
        return PaletteTokenizer.load(workdir, tuple(config.data.image_shape), int(config.tokenizer.palette_size))
    if kind == "vq":  # a trained tokenizer run in config.tokenizer.workdir
        from ar_jax.tokenizers.vq_tokens import VQTokenizer

        return VQTokenizer.from_config(config)
    raise ValueError(f"config.tokenizer.kind={kind!r} is not known; use 'pixels', 'palette' or 'vq'.")


def fit_tokenizer(config: ml_collections.ConfigDict, workdir: str | Path, train_images: np.ndarray,
                  save: bool = True) -> Any:
    """The tokenizer of a run starting in `workdir`: a palette tokenizer is fitted on `train_images` (seeded k-means,
    the same on every process) and saved there unless it is already (a resumed run keeps its palette)."""
    if config.tokenizer.kind != "palette" or (Path(workdir) / PALETTE_FILE).is_file():
        return make_tokenizer(config, workdir)
    t = config.tokenizer
    palette = PaletteTokenizer.fit(train_images, int(t.palette_size), seed=int(t.fit_seed), iters=int(t.fit_iters))
    if save:
        palette.save(workdir)
    return palette


def make_model_config(config: ml_collections.ConfigDict, tokenizer: Any = None,
                      workdir: str | Path | None = None) -> ModelConfig:
    """The model-family config named by `config.model.family`, with vocabulary, length and classes from the
    tokenizer/data (a palette run's tokenizer needs its `workdir`)."""
    tokenizer = tokenizer or make_tokenizer(config, workdir)
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
    elif m.family == "pixelcnn_pp":
        rows, per_row = tokenizer.grid
        width = tokenizer.image_shape[1]
        cfg = PixelCNNPPConfig(
            vocab_size=tokenizer.vocab_size, token_shape=(rows, width, per_row // width),
            num_classes=int(config.data.num_classes), features=m.features, num_resnets=m.num_resnets,
            num_stages=m.num_stages, num_mixtures=m.num_mixtures, dropout=m.dropout)
        if not isinstance(tokenizer, PixelTokenizer):
            raise ValueError(f"config.model.family='pixelcnn_pp' models ordered pixel levels, but "
                             f"config.tokenizer.kind={config.tokenizer.kind!r}; use tokenizer.kind='pixels'.")
    else:
        raise ValueError(f"config.model.family={m.family!r} is not one of {FAMILIES}.")
    cfg.validate()
    return cfg
