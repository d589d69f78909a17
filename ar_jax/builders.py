"""From a run's config to its objects: tokenizer and model config (one place, used by all)."""

from __future__ import annotations

import tempfile
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
from ar_jax.tokenizers.text import TEXT_TOKENIZER_FILE, TextTokenizer

MODEL_SECTIONS = ("kind", "data", "tokenizer", "model", "text")  # config sections that fix parameter shapes
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


def condition_of(config: ml_collections.ConfigDict) -> str:
    """`config.model.condition` ("class", "text" or "caption"); runs saved before conditions existed are
    class-conditional."""
    return config.model.get("condition", "class")


def text_head_of(config: ml_collections.ConfigDict) -> bool:
    """`config.model.text_head`: the run also learns image-to-text (captions after the image); runs saved before
    image-to-text existed have no such field and predict images only."""
    return bool(config.model.get("text_head", False))


def make_text_tokenizer(config: ml_collections.ConfigDict, workdir: str | Path | None = None) -> TextTokenizer | None:
    """A text run's tokenizer: the one saved in its `workdir` (trained when the run started), else the `.model` file
    `config.text.tokenizer` names; None for a class-conditional run."""
    if condition_of(config) != "text":
        return None
    saved = Path(workdir) / TEXT_TOKENIZER_FILE if workdir is not None else None
    if saved is not None and saved.is_file():
        return TextTokenizer.load(saved)
    if config.text.tokenizer:
        return TextTokenizer.load(config.text.tokenizer)
    raise ValueError(f"{workdir!r} has no {TEXT_TOKENIZER_FILE} and config.text.tokenizer is empty: the run trains "
                     "its tokenizer when it starts; train it, or set config.text.tokenizer to a SentencePiece .model.")


def fit_text_tokenizer(config: ml_collections.ConfigDict, workdir: str | Path, captions: Any,
                       save: bool = True) -> TextTokenizer | None:
    """A text run's tokenizer as it starts: kept from the workdir on resume (refused if it is not the one
    `config.text.tokenizer` names), else loaded from that file, else trained on the training `captions`; saved in
    the workdir either way, so the run never depends on the file again."""
    if condition_of(config) != "text":
        return None
    saved = Path(workdir) / TEXT_TOKENIZER_FILE
    given = TextTokenizer.load(config.text.tokenizer) if config.text.tokenizer else None
    if saved.is_file():
        tok = TextTokenizer.load(saved)
        if given is not None and given.fingerprint() != tok.fingerprint():
            raise ValueError(f"config.text.tokenizer={config.text.tokenizer!r} is not the tokenizer this run was "
                             f"trained with ({saved}); drop the override to resume, or use a new --workdir.")
        return tok
    if given is None:
        if not captions:
            raise ValueError("a text run needs captioned training data (config.data.name='scenes' or "
                             "'caption_folder'), or a tokenizer in config.text.tokenizer.")
        where = saved if save else Path(tempfile.mkdtemp())  # other hosts train the same model, deterministically
        tok = TextTokenizer.train(captions, where, vocab_size=int(config.text.vocab_size))
    else:
        tok = given
        if save:
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_bytes(tok.model_proto)
    return tok


def image_positions_of(value: Any) -> str:
    """`config.model.image_positions` as the model's name for it (runs saved with a bool: True was the learned
    table, False none)."""
    return {True: "learned", False: "none"}.get(value, value) if isinstance(value, bool) else str(value)


def make_model_config(config: ml_collections.ConfigDict, tokenizer: Any = None,
                      workdir: str | Path | None = None, text_tokenizer: Any = None) -> ModelConfig:
    """The model-family config named by `config.model.family`, with vocabulary, length and classes from the
    tokenizer/data (a palette run's tokenizer needs its `workdir`), and a text run's prompt vocabulary from its text
    tokenizer (read from the `workdir` unless given)."""
    tokenizer = tokenizer or make_tokenizer(config, workdir)
    m = config.model
    condition = condition_of(config)
    text = dict(condition=condition, text_head=text_head_of(config),
                image_positions=image_positions_of(m.get("image_positions", "none")),
                image_context=str(m.get("image_context", "causal")))
    if condition == "text":
        text_tokenizer = text_tokenizer or make_text_tokenizer(config, workdir)
        text.update(text_len=int(config.text.max_len), text_vocab_size=text_tokenizer.vocab_size)
    elif condition == "caption":  # caption features (LlamaGen t2i, ar_jax.convert.llamagen)
        text.update(caption_dim=int(m.caption_dim))
    elif condition != "class":
        raise ValueError(f"config.model.condition={condition!r} must be 'class', 'text' or 'caption'.")
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
            ffn_dropout=m.ffn_dropout, dtype=m.dtype, causal=not maskgit, **text,
            scan_layers=bool(m.get("scan_layers", False)), remat=m.get("remat", "none"))  # runs saved before: off
        cfg = MaskGITConfig(cfg) if maskgit else cfg
    elif condition != "class" or text["text_head"]:
        raise ValueError(f"config.model.family={m.family!r} is class-conditional only; condition={condition!r} and "
                         f"text_head={text['text_head']} need family='transformer' (or 'maskgit' without text_head).")
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
