"""Test factories, one place for every family: tiny models and configs, so each test states only what it varies."""

from __future__ import annotations

import os
import shutil
import types

import jax
import jax.numpy as jnp
import ml_collections

from ar_jax import backends
from ar_jax.backends.cpu import kernels
from ar_jax.config import load_config_file
from ar_jax.models import maskgit
from ar_jax.models.pixelcnn import PixelCNNConfig
from ar_jax.models.pixelcnn_pp import PixelCNNPPConfig
from ar_jax.models.transformer import Transformer, TransformerConfig, init_cache, init_params


def make_test_model(**overrides):
    """A tiny random transformer `(cfg, params)`; non-zero output layer so logits are informative."""
    kw = dict(vocab_size=13, seq_len=16, num_classes=3, dim=32, num_layers=2, num_heads=4, mlp_dim=48)
    kw.update(overrides)
    cfg = TransformerConfig(**kw)
    params, _ = init_params(cfg, jax.random.key(0))
    params["output"] = jax.random.normal(jax.random.key(1), params["output"].shape) * 0.5
    return cfg, params


def smoke_config(**overrides):
    """The digits smoke config with `key=value` overrides (dotted keys for nested fields)."""
    config = load_config_file("configs/digits_pixels.py:smoke")
    config.unlock()
    for key, value in overrides.items():
        node = config
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    config.lock()
    return config


def make_test_pixelcnn(**overrides):
    """A tiny random (gated) PixelCNN `(cfg, params)` on 6x6x3 tokens, 3x3 kernels everywhere."""
    kw = dict(vocab_size=5, token_shape=(6, 6, 3), num_classes=3, kind="gated", features=12, num_layers=4,
              kernel_size=3, first_kernel_size=3, embed_dim=2)
    kw.update(overrides)
    cfg = PixelCNNConfig(**kw)
    return cfg, cfg.init(jax.random.key(0))[0]


def make_test_pp(**overrides):
    """A tiny random PixelCNN++ `(cfg, params)` on 4x4x3 tokens of 5 levels; noisy weights so outputs vary."""
    kw = dict(vocab_size=5, token_shape=(4, 4, 3), num_classes=3, features=8, num_resnets=1, num_stages=2,
              num_mixtures=3)
    kw.update(overrides)
    cfg = PixelCNNPPConfig(**kw)
    params = cfg.init(jax.random.key(0))[0]
    leaves, tree = jax.tree.flatten(params)
    noise = [0.2 * jax.random.normal(jax.random.key(i), x.shape) for i, x in enumerate(leaves)]
    return cfg, jax.tree.unflatten(tree, [x + n for x, n in zip(leaves, noise)])


def make_maskgit(**overrides):
    """A tiny random MaskGIT `(cfg, params)` over 12 image tokens (+ [MASK]), 16 positions, 3 classes."""
    kw = dict(vocab_size=13, seq_len=16, num_classes=3, dim=32, num_layers=1, num_heads=4, mlp_dim=48, causal=False)
    kw.update(overrides)
    cfg = maskgit.MaskGITConfig(TransformerConfig(**kw))
    params = jax.jit(lambda r: cfg.init(r)[0])(jax.random.key(0))
    params["output"] = jax.random.normal(jax.random.key(1), params["output"].shape) * 0.5
    return cfg, params


def kernels_built() -> bool:
    """Whether the kernels must be on here: with a C++ compiler they must build; without one they must be off."""
    if not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")):
        assert not kernels.available()  # no compiler: decoding keeps XLA's products and attention
        return False
    assert kernels.available()
    return True


class FakeBuilder:
    """What the tfds source uses of a builder: `.info.features["label"].num_classes`, `.as_data_source(split)`."""

    name, data_dir = "fake", "/fake/dir"

    def __init__(self, splits, num_classes=3, features=("image", "label"), error=None):
        self.splits, self.error = splits, error
        feats = {k: types.SimpleNamespace(num_classes=num_classes) for k in features}
        self.info = types.SimpleNamespace(features=feats, splits=dict.fromkeys(splits))

    def as_data_source(self, split):
        if self.error:
            raise self.error
        if split not in self.splits:
            raise ValueError(f"Unknown split {split!r}")
        return self.splits[split]


def tfds_config(**overrides) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(dict(name="tfds", tfds_name="mnist", tfds_data_dir=None, tfds_manual_dir=None,
                                       tfds_download=False, tfds_train_split="train", tfds_test_split="test",
                                       image_shape=(16, 16, 3), num_classes=10))
    c.update(overrides)
    return c


def make_text_model(**overrides):
    """A tiny random text-conditioned transformer `(cfg, params)`: prompts of up to 6 ids from a vocabulary of 20."""
    return make_test_model(**{"condition": "text", "text_len": 6, "text_vocab_size": 20, **overrides})


def cached_logits(cfg, params, tokens, labels, backend=backends.XLA):
    """Prefill the condition's rows, then feed tokens one at a time through the cache: `[B, T, V]`."""
    model = Transformer(cfg, backend)
    cache = init_cache(cfg, tokens.shape[0])
    step = jax.jit(lambda t, c, s: model.apply({"params": params}, t, None, start=s, cache=c))
    out, cache = jax.jit(lambda c: model.apply({"params": params}, None, labels, start=0, cache=c))(cache)
    outs = [out[:, -1]]
    for t in range(tokens.shape[1] - 1):
        out, cache = step(tokens[:, t:t + 1], cache, cfg.prefix_len + t)
        outs.append(out[:, -1])
    return jnp.stack(outs, 1)


def train_both_ways_run(root):
    """The smoke scenes tokenizer and the smoke run trained both ways on it (configs/scenes_any.py:smoke) under
    `root`: the run's workdir."""
    from ar_jax.training import train_and_evaluate

    train_and_evaluate(load_config_file("configs/scenes_vq.py:smoke"), root / "vq")
    config = load_config_file("configs/scenes_any.py:smoke")
    config.unlock()
    config.tokenizer.workdir = str(root / "vq")
    config.lock()
    train_and_evaluate(config, root / "any")
    return root / "any"


def run_two_processes(out_dir, *args) -> dict:
    """`tests/multiprocess_run.py` as a real two-process `jax.distributed` run on 127.0.0.1 (2 CPU devices each),
    writing into `out_dir` (extra `args` passed on); its `multiprocess.json`, after both exited 0."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    port = free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, str(root / "tests/multiprocess_run.py"), str(port), str(i),
                               str(out_dir), *map(str, args)], env=env, cwd=root, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    return json.loads((Path(out_dir) / "multiprocess.json").read_text())


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server or coordinator a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
