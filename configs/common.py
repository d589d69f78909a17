"""Blocks every config shares (big_vision style): each returns a fresh `ConfigDict` a config assigns to a section."""

import ml_collections


def backend(attention: str = "xla") -> ml_collections.ConfigDict:
    """`config.backend`: platform choices (the platform itself comes from the devices, `ar_jax/backends`)."""
    b = ml_collections.ConfigDict()
    b.attention = attention  # training/prefill attention: "xla" (any platform), "cudnn" (GPU), "splash" (TPU)
    return b


def mesh(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
    """`config.mesh`: how the devices are laid out (`ar_jax/sharding.py`)."""
    m = ml_collections.ConfigDict()
    m.data = data  # data-parallel devices (-1: all the rest)
    m.fsdp = fsdp  # parameter/optimizer sharding
    m.tensor = tensor  # tensor parallelism (heads, mlp, vocab)
    return m
