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


def loader(shards: str = "", views: str = "none") -> ml_collections.ConfigDict:
    """`config.loader`: how training batches are read (Grain, `ar_jax/data/pipeline.py`)."""
    ld = ml_collections.ConfigDict()
    ld.shards = shards  # token shards from `python -m ar_jax.data.tokenize` ('': the source, tokenized in memory)
    ld.views = views  # augmentation views tokenize stores: "none", "flip" (image + mirror), "ten_crop" (LlamaGen)
    ld.read_threads = 2  # Grain threads reading examples (ReadOptions.num_threads; 0: in the training thread)
    ld.prefetch = 4  # batches read ahead of the step that needs them
    ld.workers = 0  # Grain worker processes (mp_prefetch); 0: read in the training process
    return ld
