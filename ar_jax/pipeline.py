"""The public surface: `pipe = ar_jax.load(workdir)`, then `pipe.sample(...)` / `pipe.bits_per_dim(...)`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ar_jax import builders, sampling
from ar_jax.config import read_config
from ar_jax.evaluation.likelihood import bits_per_dim
from ar_jax.models.transformer import param_shapes


class ARPipeline:
    """A trained AR run: its config, tokenizer, model config and parameters (a palette run needs its workdir, or
    its tokenizer)."""

    def __init__(self, config: ml_collections.ConfigDict, params: Any, workdir: str | Path | None = None,
                 tokenizer: Any = None):
        self.config = config
        self.tokenizer = tokenizer or builders.make_tokenizer(config, workdir)
        self.model_config = builders.make_model_config(config, self.tokenizer)
        self.params = params

    def sample_tokens(self, labels: Any, seed: int = 0, prefix: Any = None, **overrides: Any) -> jax.Array:
        """Image tokens `[B, seq_len]`; sampling settings default to `config.sampling`."""
        settings = {**self.config.sampling.to_dict(), **overrides}
        known = {"temperature", "top_k", "top_p", "greedy", "cfg_scale", "min_p", "typical_p", "repetition_penalty"}
        unknown = set(settings) - known
        if unknown:
            raise ValueError(f"unknown sampling setting(s) {sorted(unknown)}; use {', '.join(sorted(known))}.")
        return self.model_config.generate(self.params, labels, jax.random.key(seed), prefix=prefix, **settings)

    def sample(self, labels: Any, seed: int = 0, **overrides: Any) -> np.ndarray:
        """uint8 images `[B, H, W, C]` of classes `labels [B]`; a fixed seed gives the same images."""
        return self.tokenizer.decode(np.asarray(self.sample_tokens(labels, seed, **overrides)))

    def complete(self, images: Any, num_known_rows: int, labels: Any, seed: int = 0, **overrides: Any) -> np.ndarray:
        """Keep the first `num_known_rows` rows of `images [B, H, W, C]` and sample the rest."""
        tokens = self.tokenizer.encode(images)
        rows, per_row = self.tokenizer.grid
        if not 0 < num_known_rows < rows:
            raise ValueError(f"num_known_rows={num_known_rows} must be in [1, {rows - 1}] for {rows}-row images.")
        prefix = tokens[:, : num_known_rows * per_row]
        return self.tokenizer.decode(np.asarray(self.sample_tokens(labels, seed, prefix=prefix, **overrides)))

    def bits_per_dim(self, images: Any, labels: Any) -> np.ndarray:
        """Exact NLL of uint8 `images [B, H, W, C]` given `labels [B]`, in bits per dimension, `[B]`."""
        tokens = self.tokenizer.encode(images)
        labels = sampling.check_labels(labels, self.model_config)
        if labels.shape[0] != tokens.shape[0]:
            raise ValueError(f"got {tokens.shape[0]} images but {labels.shape[0]} labels; pass one label per image.")
        return bits_per_dim(self.params, self.model_config, tokens, labels, int(np.prod(self.tokenizer.image_shape)))


def restore_params(workdir: str | Path, model_config: Any, item: str = "params") -> Any:
    """The parameters (or their EMA) of the latest readable checkpoint of `workdir`, checked against `model_config`."""
    from ar_jax.training.checkpoints import Checkpointer

    ckpt = Checkpointer(workdir)
    if ckpt.latest_step() is None:
        raise ValueError(f"{workdir!r} has a config but no checkpoint yet; train it first.")
    target = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), param_shapes(model_config))
    params = ckpt.restore_params(target, item=item)
    ckpt.close()
    return params


def load(workdir: str | Path, weights: str = "default") -> Any:
    """Config + latest checkpoint of the run in `workdir`: an `ARPipeline`, or a `VQPipeline` for a tokenizer run.

    `weights`: "default" (the EMA weights when the run kept them, else the raw ones), "ema" or "raw".
    """
    config = read_config(workdir)
    if config.kind == "vq":  # a tokenizer run: pipe.encode(images) -> codes, pipe.decode(codes) -> images
        from ar_jax.tokenizers.vq_tokens import load_vq

        return load_vq(workdir)
    if config.kind != "ar":
        raise ValueError(f"{workdir!r} holds a run of kind {config.kind!r}; ar_jax.load knows 'ar' and 'vq'.")
    has_ema = config.get("ema_decay", 0.0) > 0
    if weights not in ("default", "ema", "raw"):
        raise ValueError(f"weights={weights!r} must be 'default', 'ema' or 'raw'.")
    if weights == "ema" and not has_ema:
        raise ValueError(f"{workdir!r} was trained without EMA (config.ema_decay=0); use weights='raw'.")
    item = "ema_params" if has_ema and weights != "raw" else "params"
    tokenizer = builders.make_tokenizer(config, workdir)
    model_config = builders.make_model_config(config, tokenizer)
    return ARPipeline(config, restore_params(workdir, model_config, item=item), tokenizer=tokenizer)
