"""VQ tokenizer training (EMA codebook, dead-code restart, resume), `ar_jax.load` on a tokenizer run, and the
two-stage VQ -> AR path. One smoke tokenizer is trained per module and shared."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ar_jax
from ar_jax.config import load_config_file
from ar_jax.training.checkpoints import Checkpointer
from ar_jax.training.vq_trainer import ema_codebook_update, restart_dead_codes, train_vq


def config(spec, **overrides):
    c = load_config_file(spec)
    c.unlock()
    for key, value in overrides.items():
        node = c
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    c.lock()
    return c


def test_ema_codebook_update_matches_formula():
    count, total = jnp.array([1.0, 1.0]), jnp.array([[1.0, 0.0], [0.0, 1.0]])
    z = jnp.array([[2.0, 0.0], [4.0, 0.0], [0.0, 2.0]])
    codes = jnp.array([0, 0, 1])
    c, t, e = ema_codebook_update(count, total, z, codes, decay=0.5, eps=0.0)
    np.testing.assert_allclose(c, [1.5, 1.0])  # 0.5 * 1 + 0.5 * (2, 1)
    np.testing.assert_allclose(t, [[3.5, 0.0], [0.0, 1.5]])  # 0.5 * total + 0.5 * (sum of assigned z)
    np.testing.assert_allclose(e, [[3.5 / 1.5, 0.0], [0.0, 1.5]], rtol=1e-6)
    eps = 0.1  # Laplace smoothing: N'_k = (N_k + eps) / (N + K eps) * N
    _, _, e = ema_codebook_update(count, total, z, codes, decay=0.5, eps=eps)
    smoothed = (np.array([1.5, 1.0]) + eps) / (2.5 + 2 * eps) * 2.5
    np.testing.assert_allclose(e, np.array([[3.5, 0.0], [0.0, 1.5]]) / smoothed[:, None], rtol=1e-6)


def test_dead_code_restart_replaces_exactly_the_unused_codes():
    codebook = jnp.arange(12.0).reshape(4, 3)
    z = 100.0 + jnp.arange(24.0).reshape(8, 3)
    new, dead = restart_dead_codes(codebook, jnp.array([3.0, 0.0, 1.0, 0.0]), z, jax.random.key(0), min_count=1.0)
    np.testing.assert_array_equal(dead, [False, True, False, True])
    new, codebook = np.asarray(new), np.asarray(codebook)
    np.testing.assert_array_equal(new[[0, 2]], codebook[[0, 2]])
    zs = {tuple(r) for r in np.asarray(z)}
    assert all(tuple(r) in zs for r in new[[1, 3]])
    assert not np.array_equal(new[1], new[3])  # distinct encoder outputs


GAN = {"gan.weight": 0.5, "gan.start_step": 3, "log_every": 1}  # the shared run is a VQGAN: D from step 3


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("vq")
    state = train_vq(config("configs/shapes_vq.py:smoke", **GAN), workdir)
    return workdir, state


def test_smoke_vq_training_reduces_loss_and_resumes(vq_run):
    workdir, state = vq_run
    lines = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]
    recon = [m["recon_loss"] for m in lines if "recon_loss" in m]
    assert recon[-1] < recon[0], recon
    assert any("test_codebook_usage" in m for m in lines)
    # Resume: drop the last checkpoint, train again from step 10 -> the same final parameters.
    resumed = workdir.parent / "vq_resumed"
    shutil.copytree(workdir, resumed)
    shutil.rmtree(resumed / "checkpoints" / "20")
    assert Checkpointer(resumed).latest_step() == 10
    again = train_vq(config("configs/shapes_vq.py:smoke", **GAN), resumed)
    assert int(again["step"]) == 20
    for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(again["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    steps = [m["step"] for m in map(json.loads, (resumed / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    assert steps == sorted(set(steps))  # nothing logged twice


def test_load_tokenizer_workdir_encodes_and_decodes(vq_run):
    workdir, _ = vq_run
    pipe = ar_jax.load(workdir)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    codes = pipe.encode(images)
    assert codes.shape == (3, 8, 8) and codes.dtype == np.int32 and codes.max() < 16
    out = pipe.decode(codes)
    assert out.shape == (3, 32, 32, 3) and out.dtype == np.uint8
    with pytest.raises(ValueError, match="tokenizer run.*configs/shapes_ar.py"):
        pipe.sample([0])


def test_mismatched_tokenizer_workdir_is_refused_naming_both(vq_run):
    from ar_jax import builders

    workdir, _ = vq_run
    c = config("configs/shapes_ar.py:smoke", **{"tokenizer.workdir": str(workdir), "tokenizer.codebook_size": 99})
    with pytest.raises(ValueError, match=r"codebook_size=99.*has 16"):
        builders.make_tokenizer(c)
    c = config("configs/shapes_ar.py:smoke", **{"tokenizer.workdir": str(workdir), "tokenizer.grid": (4, 4)})
    with pytest.raises(ValueError, match=r"grid=\(4, 4\).*has \(8, 8\)"):
        builders.make_tokenizer(c)


def test_two_stage_smoke_run_samples_rgb_images(vq_run, tmp_path):
    from ar_jax.training import train_and_evaluate

    workdir, _ = vq_run
    c = config("configs/shapes_ar.py:smoke", **{"tokenizer.workdir": str(workdir), "data.num_train": 300})
    train_and_evaluate(c, tmp_path / "ar")
    assert list((workdir / "token_cache").glob("*.npy"))  # the train split (270 after validation) tokenized once
    pipe = ar_jax.load(tmp_path / "ar")
    samples = pipe.sample(np.array([0, 4]), seed=1)
    assert samples.shape == (2, 32, 32, 3) and samples.dtype == np.uint8


def test_vqgan_smoke_trains_discriminator_after_start_step(vq_run):
    from ar_jax.training import vq_gan

    logits = jnp.array([2.0, -0.5])
    np.testing.assert_allclose(vq_gan.hinge_d_loss(logits, -logits), 0.5 * (0.75 + 0.75))  # relu(1-2)=0, relu(1.5)
    np.testing.assert_allclose(vq_gan.adaptive_weight(jnp.ones(4) * 3, jnp.ones(4)), 3 / (1 + 0.5e-4), rtol=1e-6)
    workdir, _ = vq_run
    lines = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines() if "d_loss" in ln]
    assert [m["d_factor"] for m in lines] == [0] * 3 + [1] * 17  # logged after step s: factor of step s-1
    assert all(np.isfinite(m["loss"]) and m["gan_lambda"] >= 0 for m in lines)
