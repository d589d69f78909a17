"""PixelCNN family: causality by gradient (masks A/B, RGB order), the blind spot and its fix, sampling, training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ar_jax
from ar_jax import decode
from ar_jax.models.pixelcnn import PixelCNN, conv_mask
from ar_jax.training import trainer
from ar_jax.training.metrics import read_metrics
from tests.helpers import make_test_pixelcnn, smoke_config


def dependence(cfg, params):
    """`D [T, T]`: D[o, o'] = sum |d logit_o . r / d input_o'| over the embedding, T = H*W*C in raster order."""
    H, W, C = cfg.token_shape
    E = cfg.embed_dim
    proj = jax.random.normal(jax.random.key(1), (cfg.vocab_size,))
    x = jax.random.normal(jax.random.key(2), (H, W, C * E))
    f = lambda x: PixelCNN(cfg).apply({"params": params["net"]}, x[None], jnp.array([1]))[0] @ proj  # [H, W, C]
    jac = jax.jit(jax.jacrev(f))(x).reshape(H * W * C, H * W * C, E)
    return np.abs(np.asarray(jac)).sum(-1)


@pytest.mark.parametrize("kind", ["pixelcnn", "gated"])
@pytest.mark.parametrize("channels", [1, 3])
def test_no_output_depends_on_its_own_or_later_inputs(kind, channels):
    cfg, params = make_test_pixelcnn(kind=kind, token_shape=(6, 6, channels))
    D = dependence(cfg, params)
    T = D.shape[0]
    future = np.triu(np.ones((T, T), bool))  # o' >= o: the subpixel itself, later channels, later pixels
    assert (D[future] == 0).all(), np.argwhere(D * future)[:5]
    assert (D[~future] > 0).mean() > 0.3  # and it does depend on the past


def test_rgb_order_within_a_pixel():
    cfg, params = make_test_pixelcnn(kind="pixelcnn", num_layers=2)
    D = dependence(cfg, params).reshape(36, 3, 36, 3)
    p = 2 * 6 + 3
    assert D[p, 0, p].sum() == 0  # R sees no channel of its own pixel
    assert D[p, 1, p, 0] > 0 and D[p, 1, p, 1:].sum() == 0  # G sees R only
    assert (D[p, 2, p, :2] > 0).all() and D[p, 2, p, 2] == 0  # B sees R and G


def test_mask_a_excludes_the_centre_and_mask_b_keeps_it():
    g = np.zeros(1, int)
    a, b = conv_mask(3, 3, g, g, "full", "A"), conv_mask(3, 3, g, g, "full", "B")
    assert a[1, 1].sum() == 0 and b[1, 1].sum() == 1
    assert a[:, :, 0, 0].tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]


def test_gated_stack_has_no_blind_spot_but_plain_stack_does():
    i, j, W, C = 3, 2, 6, 3
    o = (i * W + j) * C
    earlier = np.arange(o)  # every subpixel of every earlier pixel: all within 4 layers' reach from (3, 2)
    gated = dependence(*make_test_pixelcnn(kind="gated"))
    assert (gated[o, earlier] > 0).all(), earlier[gated[o, earlier] == 0]
    plain = dependence(*make_test_pixelcnn(kind="pixelcnn"))
    blind = (i - 1) * W + j + 2  # up one row, two to the right: never reached by 3x3 masked convolutions
    assert (plain[o, earlier] == 0).any()
    assert plain[o, blind * C:(blind + 1) * C].sum() == 0
    assert gated[o, blind * C:(blind + 1) * C].min() > 0


def test_token_nll_shape_and_dropout():
    cfg, params = make_test_pixelcnn(dropout=0.5)
    tokens = jax.random.randint(jax.random.key(3), (2, cfg.seq_len), 0, cfg.vocab_size)
    nll = cfg.token_nll(params, tokens, jnp.array([0, 3]))
    assert nll.shape == (2, 108) and nll.dtype == jnp.float32 and (nll > 0).all()
    np.testing.assert_array_equal(nll, cfg.token_nll(params, tokens, jnp.array([0, 3])))
    assert not np.allclose(nll, cfg.token_nll(params, tokens, jnp.array([0, 3]), jax.random.key(4)))


@pytest.mark.parametrize("kind", ["pixelcnn", "gated"])
def test_sampler_shape_range_and_seed(kind):
    cfg, params = make_test_pixelcnn(kind=kind, token_shape=(4, 4, 3), num_layers=2)
    toks = decode.generate(params, cfg, [0, 2], jax.random.key(5), cfg_scale=2.0, temperature=0.8)
    assert toks.shape == (2, 48) and toks.dtype == jnp.int32
    assert 0 <= int(toks.min()) and int(toks.max()) < cfg.vocab_size
    np.testing.assert_array_equal(toks, decode.generate(params, cfg, [0, 2], jax.random.key(5), cfg_scale=2.0,
                                                     temperature=0.8))
    other = decode.generate(params, cfg, [0, 2], jax.random.key(6), cfg_scale=2.0, temperature=0.8)
    assert not np.array_equal(toks, other)
    prefix = np.asarray(toks[:, :10])
    again = decode.generate(params, cfg, [1, 1], jax.random.key(7), prefix=prefix)
    np.testing.assert_array_equal(again[:, :10], prefix)


def test_greedy_sampling_picks_the_argmax_of_each_conditional():
    cfg, params = make_test_pixelcnn(token_shape=(3, 3, 3), num_layers=2)
    toks = decode.generate(params, cfg, [1], jax.random.key(0), greedy=True)
    np.testing.assert_array_equal(jnp.argmax(cfg.logits(params, toks, jnp.array([1])), -1), toks)


def test_bad_labels_and_settings_are_refused():
    cfg, params = make_test_pixelcnn(token_shape=(3, 3, 3), num_layers=2)
    with pytest.raises(ValueError, match="label 3 is outside"):
        decode.generate(params, cfg, [3], jax.random.key(0))
    with pytest.raises(ValueError, match="temperature"):
        decode.generate(params, cfg, [0], jax.random.key(0), temperature=0.0)
    with pytest.raises(ValueError, match="features=10"):
        make_test_pixelcnn(features=10)


def test_smoke_training_of_gated_pixelcnn_lowers_loss_and_loads(tmp_path):
    config = smoke_config(num_train_steps=12, log_every=2, eval_every=12, checkpoint_every=12)
    config.unlock()
    config.model = ar_jax.config.load_config_file("configs/digits_gated_pixelcnn.py:smoke").model
    config.optimizer.learning_rate = 3e-3
    config.samples_per_class = 1
    config.lock()
    trainer.train_and_evaluate(config, tmp_path)
    losses = [m["loss"] for m in read_metrics(tmp_path) if "loss" in m]
    assert losses[-1] < losses[0] - 0.3, losses
    pipe = ar_jax.load(tmp_path)
    images = pipe.sample([0, 9], seed=1)
    assert images.shape == (2, 8, 8, 1) and images.dtype == np.uint8
    bpd = pipe.bits_per_dim(images, [0, 9])
    assert bpd.shape == (2,) and np.isfinite(bpd).all()
