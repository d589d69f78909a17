"""Decoding: every way of turning a trained model into tokens, in one package.

`generate(params, cfg, labels, rng, **settings)` samples from any model family; the family's own loop is chosen here
(the one place that maps families to decoders): the transformer's KV-cache sampler (`sampling`), MaskGIT's parallel
decoding (`maskgit`), the PixelCNN families' loop (`pixelcnn`). Beam search (`beam`), speculative decoding
(`speculative`) and the logits processors (`processors`) sit beside them.
"""

from __future__ import annotations

from typing import Any

import jax

from ar_jax.models.maskgit import MaskGITConfig
from ar_jax.models.pixelcnn import PixelCNNConfig
from ar_jax.models.pixelcnn_pp import PixelCNNPPConfig
from ar_jax.models.transformer import TransformerConfig

AR_SETTINGS = ("temperature", "top_k", "top_p", "greedy", "cfg_scale", "min_p", "typical_p", "repetition_penalty")
MASKGIT_SETTINGS = AR_SETTINGS + ("steps", "choice_temperature", "given", "known")


def settings(cfg: Any) -> tuple[str, ...]:
    """The sampling settings `generate` takes for this family (besides `prefix`)."""
    return MASKGIT_SETTINGS if isinstance(cfg, MaskGITConfig) else AR_SETTINGS


def generate(params: Any, cfg: Any, labels: Any, rng: jax.Array, **settings: Any) -> Any:
    """Sampled tokens `[B, seq_len]` from a model of any family (settings: `settings(cfg)`, plus `prefix`)."""
    if isinstance(cfg, TransformerConfig):
        from ar_jax.decode.sampling import generate as run
    elif isinstance(cfg, MaskGITConfig):
        from ar_jax.decode.maskgit import generate as run
    elif isinstance(cfg, (PixelCNNConfig, PixelCNNPPConfig)):
        from ar_jax.decode.pixelcnn import generate as run
    else:
        raise TypeError(f"no decoder for a model of type {type(cfg).__name__}.")
    return run(params, cfg, labels, rng, **settings)
