"""ImageGPT palette tokenizer: k-means distortion never rises, nearest-centroid round trip, interface, seeds, and
the palette a run saves, resumes with and loads."""

import jax
import numpy as np
import pytest

import ar_jax
from ar_jax.config import load_config_file
from ar_jax.data.sources import get_dataset
from ar_jax.data.splits import split_validation
from ar_jax.models.pixelcnn import PixelCNNConfig
from ar_jax.tokenizers.palette import PALETTE_FILE, PaletteTokenizer, fit_palette
from ar_jax.training import trainer
from ar_jax.training.metrics import read_metrics


def clustered_images(n=12, h=6, w=6, seed=0):
    """uint8 `[n, h, w, 3]`: pixels near 5 well-separated colours, plus noise."""
    rng = np.random.default_rng(seed)
    colours = np.array([[20, 20, 20], [230, 30, 30], [30, 200, 40], [40, 40, 220], [240, 240, 200]])
    idx = rng.integers(0, len(colours), (n, h, w))
    return np.clip(colours[idx] + rng.normal(0, 12, (n, h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_kmeans_distortion_never_rises(init):
    images = np.random.default_rng(1).integers(0, 256, (8, 8, 8, 3)).astype(np.uint8)  # no clear clusters
    _, distortion = fit_palette(images, k=9, seed=3, iters=15, init=init)
    assert distortion.shape == (15,)
    steps = np.diff(distortion)
    assert (steps <= 1e-4 * distortion[:-1]).all(), distortion  # float32 round-off only
    assert distortion[-1] < 0.9 * distortion[0]


def test_kmeans_plus_plus_finds_separated_clusters():
    palette, distortion = fit_palette(clustered_images(), k=5, seed=0, iters=10)
    assert distortion[-1] < 12 ** 2 * 3 * 1.2  # about the noise variance: every cluster found
    assert palette.shape == (5, 3) and palette.dtype == np.float32


def test_round_trip_maps_each_pixel_to_its_nearest_centroid():
    images = clustered_images(seed=2)
    tok = PaletteTokenizer.fit(images, k=7, seed=1)
    tokens = tok.encode(images)
    assert tokens.shape == (12, 36) and tokens.dtype == np.int32
    pix = images.reshape(-1, 3).astype(np.float64)
    nearest = ((pix[:, None] - tok.palette[None].astype(np.float64)) ** 2).sum(-1).argmin(-1)
    np.testing.assert_array_equal(tokens.reshape(-1), nearest)
    decoded = tok.decode(tokens)
    assert decoded.shape == images.shape and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded.reshape(-1, 3), np.round(tok.palette[nearest]).astype(np.uint8))
    np.testing.assert_array_equal(tok.encode(decoded), tokens)  # palette colours encode to themselves


def test_interface_seed_and_errors():
    images = clustered_images()
    tok = PaletteTokenizer.fit(images, k=6, seed=4)
    assert (tok.vocab_size, tok.seq_len, tok.grid, tok.image_shape) == (6, 36, (6, 6), (6, 6, 3))
    np.testing.assert_array_equal(tok.palette, PaletteTokenizer.fit(images, k=6, seed=4).palette)
    with pytest.raises(ValueError, match="uint8"):
        tok.encode(images.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        tok.encode(images[:, :4])
    with pytest.raises(ValueError, match="vocab_size=6"):
        tok.decode(np.full((1, 36), 6))
    with pytest.raises(ValueError, match="k=0"):
        fit_palette(images, k=0)


def test_pixelcnn_models_palette_tokens():
    tok = PaletteTokenizer.fit(clustered_images(), k=5, seed=0)
    rows, per_row = tok.grid
    cfg = PixelCNNConfig(vocab_size=tok.vocab_size, token_shape=(rows, per_row, 1), num_classes=0, features=8,
                         num_layers=2, first_kernel_size=3, embed_dim=4)
    params, _ = cfg.init(jax.random.key(0))
    tokens = tok.encode(clustered_images(n=2))
    assert jax.jit(cfg.token_nll)(params, tokens, np.zeros(2, np.int32)).shape == (2, 36)


def test_saved_palette_loads_back_to_identical_tokens(tmp_path):
    images = clustered_images()
    tok = PaletteTokenizer.fit(images, k=5, seed=0)
    assert tok.save(tmp_path) == tmp_path / PALETTE_FILE
    back = PaletteTokenizer.load(tmp_path, tok.image_shape, 5)
    np.testing.assert_array_equal(back.palette, tok.palette)
    np.testing.assert_array_equal(back.encode(images), tok.encode(images))
    with pytest.raises(ValueError, match="palette_size=6"):
        PaletteTokenizer.load(tmp_path, tok.image_shape, 6)
    with pytest.raises(ValueError, match="palette.npy.*missing"):
        PaletteTokenizer.load(tmp_path / "elsewhere", tok.image_shape, 5)


def test_palette_run_fits_once_resumes_with_its_palette_and_loads(tmp_path):
    def config(steps):
        c = load_config_file("configs/shapes_palette.py:smoke")
        c.unlock()
        c.num_train_steps, c.eval_every, c.checkpoint_every = steps, steps, 2
        c.lock()
        return c

    trainer.train_and_evaluate(config(2), tmp_path)
    c = config(2)
    data, _ = split_validation(get_dataset(c.data), c.validation_fraction, c.seed)  # what the run trains on
    palette = np.load(tmp_path / PALETTE_FILE)
    np.testing.assert_array_equal(palette, fit_palette(data.train_images, 6, seed=0, iters=20)[0])  # seeded fit
    np.save(tmp_path / PALETTE_FILE, palette[::-1].copy())  # a resumed run must read the file, not refit
    trainer.train_and_evaluate(config(4), tmp_path)
    assert max(m["step"] for m in read_metrics(tmp_path)) == 4
    np.testing.assert_array_equal(np.load(tmp_path / PALETTE_FILE), palette[::-1])
    pipe = ar_jax.load(tmp_path)
    np.testing.assert_array_equal(pipe.tokenizer.palette, palette[::-1])
    images = pipe.sample(np.arange(5), seed=0)  # the trainer's sample grid's batch: its sampler is reused
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
    colours = {tuple(c) for c in np.round(palette).astype(np.uint8)}
    assert {tuple(p) for p in images.reshape(-1, 3)} <= colours
    assert np.isfinite(pipe.bits_per_dim(images, np.arange(5))).all()
    (tmp_path / PALETTE_FILE).unlink()
    with pytest.raises(ValueError, match="palette.npy.*missing"):
        ar_jax.load(tmp_path)
