"""The LPIPS perceptual loss: its formula against a float64 NumPy re-implementation, weights read from local files
(never downloaded), clear errors for missing/mis-shaped weights, and the VQ trainer using it."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from ar_jax.config import load_config_file
from ar_jax.training import perceptual
from ar_jax.training.vq_trainer import train_vq


def random_weights(seed=0):
    """Random state dicts with the shapes of torchvision's VGG16 features and LPIPS's heads (He-scaled)."""
    rng = np.random.default_rng(seed)
    vgg, lin = {}, {}
    for key, shape in perceptual.expected_shapes().items():
        if key.startswith("lin"):
            lin[key] = rng.uniform(0, 1, shape).astype(np.float32)  # LPIPS heads are non-negative
        elif key.endswith("weight"):
            vgg[key] = (rng.normal(size=shape) * np.sqrt(2.0 / (shape[1] * 9))).astype(np.float32)
        else:
            vgg[key] = (rng.normal(size=shape) * 0.1).astype(np.float32)
    return vgg, lin


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lpips")
    vgg, lin = random_weights()
    save_file(vgg, str(d / "vgg16.safetensors"))
    save_file(lin, str(d / "vgg_lpips.safetensors"))
    return d / "vgg16.safetensors", d / "vgg_lpips.safetensors", vgg, lin


def numpy_lpips(vgg, lin, x, y):
    """Direct float64 LPIPS: torch-layout convs by im2col, 2x2 max pools, channel-normalised taps."""
    def feats(img):
        h = (img.astype(np.float64) - np.array(perceptual.SHIFT)) / np.array(perceptual.SCALE)
        taps = []
        for b, block in enumerate(perceptual.VGG_BLOCKS):
            if b:
                n, hh, ww, c = h.shape
                h = h.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
            for i in block:
                w, bias = vgg[f"features.{i}.weight"].astype(np.float64), vgg[f"features.{i}.bias"]
                n, hh, ww, c = h.shape
                p = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
                cols = np.stack([p[:, dy:dy + hh, dx:dx + ww] for dy in range(3) for dx in range(3)], axis=-1)
                h = np.maximum(np.einsum("nhwck,ock->nhwo", cols, w.reshape(w.shape[0], c, 9)) + bias, 0)
            taps.append(h / (np.sqrt((h ** 2).sum(-1, keepdims=True)) + 1e-10))
        return taps
    out = 0.0
    for n, (fx, fy) in enumerate(zip(feats(x), feats(y))):
        out = out + (((fx - fy) ** 2) * lin[f"lin{n}.model.1.weight"].reshape(-1)).sum(-1).mean(axis=(1, 2))
    return out


def test_lpips_matches_numpy_and_is_zero_on_identical_images(weight_files):
    vgg_path, lin_path, vgg, lin = weight_files
    params = perceptual.load_params(vgg_path, lin_path)
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(scale=0.3, size=x.shape), -1, 1).astype(np.float32)
    got = np.asarray(perceptual.lpips(params, x, y))
    want = numpy_lpips(vgg, lin, x, y)
    assert got.shape == (2,) and np.all(want > 0)
    np.testing.assert_allclose(got, want, rtol=2e-4)
    np.testing.assert_allclose(np.asarray(perceptual.lpips(params, x, x)), 0.0, atol=1e-7)
    np.testing.assert_allclose(np.asarray(perceptual.lpips(params, y, x)), got, rtol=1e-5)


def test_missing_or_misshaped_weights_are_named():
    vgg, lin = random_weights()
    del vgg["features.12.weight"]
    with pytest.raises(ValueError, match=r"'features\.12\.weight' is missing from the VGG16 file"):
        perceptual.params_from_state_dicts(vgg, lin)
    vgg, lin = random_weights()
    lin["lin3.model.1.weight"] = np.zeros((1, 256, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"lin3\.model\.1\.weight.*\(1, 256, 1, 1\), expected \(1, 512, 1, 1\)"):
        perceptual.params_from_state_dicts(vgg, lin)


def vq_config(**perc):
    c = load_config_file("configs/shapes_vq.py:smoke")
    c.unlock()
    c.num_train_steps, c.batch_size, c.log_every, c.eval_every, c.checkpoint_every = 1, 2, 1, 1, 1
    c.perceptual.update(perc)
    c.lock()
    return c


def test_vq_trainer_refuses_perceptual_loss_without_weights(tmp_path):
    with pytest.raises(ValueError, match=r"config\.perceptual\.vgg_weights.*'/nowhere/vgg16\.pth'"):
        train_vq(vq_config(weight=1.0, vgg_weights="/nowhere/vgg16.pth"), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_vq_trainer_adds_the_perceptual_loss(weight_files, tmp_path, capsys):
    vgg_path, lin_path, _, _ = weight_files
    train_vq(vq_config(weight=1.0, vgg_weights=str(vgg_path), lpips_weights=str(lin_path)), tmp_path)
    assert "perceptual (LPIPS) loss on" in capsys.readouterr().out
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [m for m in lines if "loss" in m]
    assert losses and all(m["perceptual_loss"] > 0 for m in losses)
    assert all(m["recon_loss"] > m["perceptual_loss"] for m in losses)  # recon_loss holds pixel + perceptual
