"""A trained VQ tokenizer run as a pipeline (`ar_jax.load` on a tokenizer workdir) and as an AR tokenizer.

`VQPipeline`: uint8 images `[B, H, W, C]` <-> codes `[B, h, w]`. `VQTokenizer`: the tokenizer interface the AR
trainer and pipeline use (`encode` -> tokens `[B, h*w]` in raster order, `decode`, `vocab_size`, `seq_len`,
`grid`, `image_shape`), built from `config.tokenizer.workdir`. Large encodes (a dataset) are cached in the
tokenizer workdir under `token_cache/`, keyed by the images' hash and the tokenizer's checkpoint step, so an
AR run (or its resume, or a second AR run on the same data) tokenizes the dataset once.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ar_jax.config import read_config
from ar_jax.tokenizers import vq

BATCH = 256  # images (or code grids) per encode/decode call
CACHE_DIR = "token_cache"  # in the tokenizer workdir
CACHE_MIN_IMAGES = 256  # encodes of at least this many images are cached on disk


def vq_config(config: ml_collections.ConfigDict) -> vq.VQConfig:
    """The `VQConfig` of a tokenizer run (its `config.model` holds the fields)."""
    cfg = vq.VQConfig(**config.model.to_dict())
    cfg.validate()
    return cfg


class VQPipeline:
    """A trained tokenizer run: `encode(uint8 images [B, H, W, C]) -> codes [B, h, w]`, `decode(codes) -> uint8`."""

    def __init__(self, config: ml_collections.ConfigDict, params: Any, workdir: str | Path | None = None,
                 step: int | None = None):
        self.config, self.params = config, params
        self.vq_config = vq_config(config)
        self.workdir, self.step = workdir, step
        h, w, c = (int(v) for v in config.data.image_shape)
        self.image_shape = (h, w, c)
        self.grid = (h // self.vq_config.downsample, w // self.vq_config.downsample)

    @property
    def codebook_size(self) -> int:
        return self.vq_config.codebook_size

    def check_images(self, images: Any) -> np.ndarray:
        images = np.asarray(images)
        if images.shape[1:] != self.image_shape or images.dtype != np.uint8:
            want = ", ".join(map(str, self.image_shape))
            raise ValueError(f"images have shape {images.shape} and dtype {images.dtype}; this tokenizer takes "
                             f"uint8 images [B, {want}].")
        return images

    def encode(self, images: Any) -> np.ndarray:
        """uint8 `[B, H, W, C]` -> int32 codes `[B, h, w]`."""
        from tqdm import tqdm

        images = self.check_images(images)
        starts = tqdm(range(0, len(images), BATCH), desc="tokenize", unit="batch", disable=len(images) <= BATCH)
        out = [np.asarray(vq.encode(self.params, self.vq_config, jnp.asarray(images[i: i + BATCH], jnp.float32)
                                    / 127.5 - 1.0)[0]) for i in starts]
        return np.concatenate(out).astype(np.int32) if out else np.zeros((0, *self.grid), np.int32)

    def decode(self, codes: Any) -> np.ndarray:
        """int codes `[B, h, w]` -> uint8 images `[B, H, W, C]`."""
        codes = np.asarray(codes)
        if codes.ndim != 3 or codes.shape[1:] != self.grid:
            raise ValueError(f"codes have shape {codes.shape}; this tokenizer decodes [B, {self.grid[0]}, "
                             f"{self.grid[1]}].")
        if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes range {codes.min()}..{codes.max()} is outside 0..{self.codebook_size - 1}.")
        out = []
        for i in range(0, len(codes), BATCH):
            x = vq.decode_codes(self.params, self.vq_config, jnp.asarray(codes[i: i + BATCH], jnp.int32))
            out.append(np.asarray(jnp.round((jnp.clip(x, -1.0, 1.0) + 1.0) * 127.5)).astype(np.uint8))
        return np.concatenate(out) if out else np.zeros((0, *self.image_shape), np.uint8)


    def sample(self, *args: Any, **kwargs: Any) -> np.ndarray:
        """A tokenizer run has no prior to sample from: ValueError naming the fix."""
        raise ValueError(f"{self.workdir!r} is a VQ tokenizer run (pipe.encode / pipe.decode); to sample images, "
                         "train a prior on its codes: python train.py --config configs/shapes_ar.py --workdir W "
                         f"--config.tokenizer.workdir={self.workdir}")


def load_vq(workdir: str | Path) -> VQPipeline:
    """Config + parameters of the latest checkpoint of a tokenizer run (`config.kind == "vq"`)."""
    from ar_jax.training.checkpoints import Checkpointer

    config = read_config(workdir)
    if config.kind != "vq":
        raise ValueError(f"{workdir!r} holds a run of kind {config.kind!r}, not a VQ tokenizer ('vq').")
    cfg = vq_config(config)
    ckpt = Checkpointer(workdir)
    step = ckpt.latest_step()
    if step is None:
        raise ValueError(f"{workdir!r} has a config but no checkpoint yet; train the tokenizer first.")
    target = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), vq.param_shapes(cfg))
    params = ckpt.restore_params(target, step=step)
    ckpt.close()
    return VQPipeline(config, params, workdir, step)


@functools.lru_cache(maxsize=4)
def _cached_load(workdir: str, step: int | None) -> VQPipeline:
    del step  # part of the cache key only: a newer checkpoint loads again
    return load_vq(workdir)


class VQTokenizer:
    """The AR tokenizer interface over a trained VQ run: tokens are its codes in raster order."""

    def __init__(self, pipe: VQPipeline):
        self.pipe = pipe

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> VQTokenizer:
        """From `config.tokenizer.workdir`; refuses a run whose codebook size, grid or image shape differs from
        `config.tokenizer.codebook_size`, `config.tokenizer.grid`, `config.data.image_shape`."""
        from ar_jax.training.checkpoints import Checkpointer

        t = config.tokenizer
        workdir = str(Path(t.workdir).absolute())
        step = None
        if (Path(workdir) / "config.json").exists():
            ckpt = Checkpointer(workdir)
            step = ckpt.latest_step()
            ckpt.close()
        pipe = _cached_load(workdir, step)
        for name, want, have in (("config.tokenizer.codebook_size", int(t.codebook_size), pipe.codebook_size),
                                 ("config.tokenizer.grid", tuple(t.grid), pipe.grid),
                                 ("config.data.image_shape", tuple(config.data.image_shape), pipe.image_shape)):
            if want != have:
                raise ValueError(f"{name}={want} but the tokenizer in {t.workdir!r} has {have}; point "
                                 "config.tokenizer.workdir at a matching tokenizer run or set " f"{name}={have}.")
        return cls(pipe)

    @property
    def vocab_size(self) -> int:
        return self.pipe.codebook_size

    @property
    def seq_len(self) -> int:
        return self.pipe.grid[0] * self.pipe.grid[1]

    @property
    def grid(self) -> tuple[int, int]:
        """The token grid (rows, tokens per row)."""
        return self.pipe.grid

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.pipe.image_shape

    def encode(self, images: Any) -> np.ndarray:
        """uint8 `[B, H, W, C]` -> tokens `[B, h*w]`; cached on disk for `CACHE_MIN_IMAGES` images or more."""
        images = self.pipe.check_images(images)
        path = None
        if len(images) >= CACHE_MIN_IMAGES and self.pipe.workdir is not None:
            key = hashlib.sha256(np.ascontiguousarray(images).tobytes() + str(images.shape).encode()).hexdigest()
            path = Path(self.pipe.workdir) / CACHE_DIR / f"step{self.pipe.step}_{key[:24]}.npy"
            if path.exists():
                return np.load(path)
        tokens = self.pipe.encode(images).reshape(len(images), -1)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp.npy")
                np.save(tmp, tokens)
                tmp.replace(path)
            except OSError as e:  # e.g. a read-only tokenizer workdir: tokens are still returned
                logging.warning("could not cache tokens in %s (%s); they will be computed again next time.",
                                path.parent, e)
        return tokens

    def decode(self, tokens: Any) -> np.ndarray:
        """tokens `[B, h*w]` -> uint8 images `[B, H, W, C]`."""
        tokens = np.asarray(tokens)
        return self.pipe.decode(tokens.reshape(tokens.shape[0], *self.pipe.grid))
