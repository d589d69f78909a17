"""Converted LlamaGen models saved as ar_jax workdirs: `ar_jax.load` and `sample.py --workdir` give the converted
model's logits and tokens, with no conversion (fixtures read from ../shared, never copied)."""

from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

import ar_jax
from ar_jax import cli
from ar_jax.config import read_config
from ar_jax.convert import llamagen, llamagen_workdir
from ar_jax.models.transformer import Transformer
from ar_jax.tokenizers import vq as vqlib

FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "llamagen"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"LlamaGen fixtures not found at {FIXTURES}")
TINY_GPT = dict(dim=64, n_layer=2, n_head=4, vocab_size=64, block_size=16, num_classes=10)
TINY_VQ = dict(ch=32, ch_mult=[1, 2], z_channels=32, codebook_size=32, codebook_embed_dim=8)


@pytest.fixture(scope="module")
def gen():
    return llamagen.load_gpt(FIXTURES / "tiny_gpt.safetensors", **TINY_GPT)


@pytest.fixture(scope="module")
def saved(gen, tmp_path_factory):
    """The fixture GPT with a random VQ of its vocabulary (the fixture VQ has 32 codes, the GPT 64), saved."""
    args = llamagen._resolve("VQ", llamagen.VQ_DEFAULTS, llamagen.VQ_PRESETS, None, {**TINY_VQ, "codebook_size": 64})
    cfg = llamagen.vq_config(args)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: np.float32(0.1) * rng.standard_normal(s.shape, np.float32), vqlib.param_shapes(cfg))
    vq = llamagen.LlamaGenVQ(cfg, params, args)
    workdir = tmp_path_factory.mktemp("converted") / "w"
    assert llamagen.save_workdirs(gen, vq, workdir) == workdir
    return workdir, vq


def test_loaded_workdir_gives_the_converted_models_logits_and_tokens(gen, saved):
    workdir, _ = saved
    io = dict(np.load(FIXTURES / "tiny_gpt_io.npz"))
    pipe = ar_jax.load(workdir)
    labels = io["class_labels"]
    logits, _ = jax.jit(Transformer(pipe.model_config).apply)({"params": pipe.params}, io["input_tokens"], labels)
    np.testing.assert_array_equal(logits, gen.logits(io["input_tokens"], labels))
    assert np.abs(np.asarray(logits) - io["tf_logits"]).max() <= 1e-5
    np.testing.assert_array_equal(pipe.sample_tokens(labels, greedy=True), io["cfg4_greedy_tokens"])  # config: CFG 4
    np.testing.assert_array_equal(pipe.sample_tokens(labels, seed=5),
                                  gen.sample(labels, cfg_scale=4.0, top_k=2000, seed=5))  # LlamaGen's defaults
    s = pipe.config.sampling
    assert (s.cfg_scale, s.top_k, s.temperature, s.top_p) == (4.0, 64, 1.0, 1.0)  # top-k 2000 clamped to the vocab


def test_sample_cli_writes_a_grid_from_the_workdir(saved, tmp_path):
    workdir, vq = saved
    out = tmp_path / "grid.png"
    cli.sample_main(["--workdir", str(workdir), "--out", str(out), "--labels", "3,7", "--per_class", "1"])
    grid = np.asarray(Image.open(out))
    assert grid.shape[-1] == 3 and grid.shape[0] >= 2 * 8  # two rows of 8x8 images (4x4 codes, downsampling 2)
    npz = tmp_path / "s.npz"
    cli.sample_main(["--workdir", str(workdir), "--out", str(npz), "--labels", "3,7", "--per_class", "1"])
    tokens = ar_jax.load(workdir).sample_tokens([3, 7], seed=0)
    expected = np.clip(np.round((np.asarray(vq.decode(np.asarray(tokens).reshape(2, 4, 4))) + 1) * 127.5), 0, 255)
    np.testing.assert_array_equal(np.load(npz)["images"], expected.astype(np.uint8))  # decoded by the saved VQ


def test_tokenizer_workdir_encodes_as_the_converted_vq(tmp_path):
    io = dict(np.load(FIXTURES / "tiny_vq_io.npz"))
    vq = llamagen.load_vq(FIXTURES / "tiny_vq.safetensors", **TINY_VQ)
    llamagen_workdir.main(["--vq", str(FIXTURES / "tiny_vq.safetensors"), "--vq_preset", "VQ-16", "--vq_args",
                           '{"ch": 32, "ch_mult": [1, 2], "z_channels": 32, "codebook_size": 32}', "--image_size",
                           "32", "--out", str(tmp_path / "w")])
    pipe = ar_jax.load(tmp_path / "w" / "tokenizer")
    assert read_config(tmp_path / "w" / "tokenizer").kind == "vq" and pipe.grid == (16, 16)
    images = np.clip(np.round((io["image"].transpose(0, 2, 3, 1) + 1) * 127.5), 0, 255).astype(np.uint8)
    codes = pipe.encode(images)
    np.testing.assert_array_equal(codes, vq.encode(images / 127.5 - 1.0))
    decoded = np.clip(np.round((np.asarray(vq.decode(codes)) + 1) * 127.5), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(pipe.decode(codes), decoded)


def test_conversions_that_cannot_be_saved_are_refused(gen, saved, tmp_path, capsys):
    workdir, vq = saved
    with pytest.raises(ValueError, match="already holds a workdir"):
        llamagen.save_workdirs(gen, vq, workdir)
    with pytest.raises(SystemExit):  # the fixture VQ has 32 codes, the GPT 64
        llamagen_workdir.main(["--gpt", str(FIXTURES / "tiny_gpt.safetensors"), "--gpt_args",
                               '{"dim": 64, "n_layer": 2, "n_head": 4, "vocab_size": 64, "block_size": 16, '
                               '"num_classes": 10}', "--vq", str(FIXTURES / "tiny_vq.safetensors"), "--vq_args",
                               '{"ch": 32, "ch_mult": [1, 2], "z_channels": 32, "codebook_size": 32}',
                               "--out", str(tmp_path / "x")])
    assert "vocab_size=64 differs from the VQ's codebook_size=32" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # checked before anything is written
    eps = llamagen.LlamaGenGPT(gen.cfg.replace(norm_eps=1e-6), gen.params, gen.model_args)
    with pytest.raises(ValueError, match=r"norm_eps=1e-06 \(the config would build 1e-05\)"):
        llamagen.save_workdirs(eps, vq, tmp_path / "y")
