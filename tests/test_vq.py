"""The VQ tokenizer: shapes over depths, nearest-code lookup, straight-through gradients, losses, metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ar_jax.tokenizers import vq


def roundtrip(model, images):
    """All of encode, decode and decode_codes in one `apply` (one compilation per config)."""
    quant, codes, _ = model.encode(images)
    return codes, quant, model.decode(quant), model.decode_codes(codes)


def make_vq(**overrides):
    """A tiny random VQ model `(cfg, params)`; numpy init (compiling a random init costs seconds per config)."""
    kw = dict(ch=8, ch_mult=(1, 2), z_channels=8, num_res_blocks=1, norm_groups=4, codebook_size=16,
              codebook_embed_dim=4)
    kw.update(overrides)
    cfg = vq.VQConfig(**kw)
    rng = np.random.default_rng(0)
    fan_in = lambda s: np.prod(s[:-1]) if len(s) == 4 else 1.0
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) / np.sqrt(fan_in(s.shape)), jnp.float32),
                          vq.param_shapes(cfg))
    return cfg, params


@pytest.mark.parametrize("l2_norm", [False, True])
def test_codebook_init(l2_norm):
    cfg = vq.VQConfig(codebook_size=64, codebook_embed_dim=4, codebook_l2_norm=l2_norm)
    book = vq.VectorQuantizer(cfg).init(jax.random.key(0), jnp.zeros((1, 4)))["params"]["codebook"]
    assert book.shape == (64, 4)
    if l2_norm:  # LlamaGen: uniform(-1/K, 1/K) rows, then unit length
        np.testing.assert_allclose(jnp.linalg.norm(book, axis=-1), 1.0, rtol=1e-5)
    else:
        assert float(jnp.abs(book).max()) <= 1 / 64 and float(book.std()) > 0.2 / 64


@pytest.mark.parametrize("overrides", [dict(ch_mult=[1], codebook_l2_norm=False, dtype="bfloat16"),
                                       dict(ch_mult=(1, 2)),
                                       dict(ch_mult=(1, 1, 2), decoder_ch_mult=(2, 1, 1), num_res_blocks=2)])
def test_shapes_encode_decode(overrides):
    cfg, params = make_vq(**overrides)
    f = cfg.downsample
    assert f == 2 ** (len(cfg.ch_mult) - 1)
    images = jax.random.uniform(jax.random.key(1), (2, 16, 24, 3), minval=-1, maxval=1)
    codes, quant, recon, recon_codes = jax.jit(
        lambda p, x: vq.VQModel(cfg).apply({"params": p}, x, method=roundtrip))(params, images)
    assert codes.shape == (2, 16 // f, 24 // f) and codes.dtype == jnp.int32
    assert quant.shape == (2, 16 // f, 24 // f, cfg.codebook_embed_dim)
    assert int(codes.min()) >= 0 and int(codes.max()) < cfg.codebook_size
    assert recon.shape == images.shape and recon.dtype == jnp.float32 and bool(jnp.isfinite(recon).all())
    np.testing.assert_allclose(recon_codes, recon, atol=1e-5 if cfg.dtype == "float32" else 0.1)
    # Every latent is a codebook row: the codes pick them.
    book = params["quantize"]["codebook"]
    book = book / jnp.linalg.norm(book, axis=-1, keepdims=True) if cfg.codebook_l2_norm else book
    np.testing.assert_allclose(quant, book[codes], atol=1e-6 if cfg.dtype == "float32" else 1e-2)


@pytest.mark.parametrize("l2_norm", [False, True])
def test_lookup_is_brute_force_nearest(l2_norm):
    z = np.asarray(jax.random.normal(jax.random.key(0), (3, 5, 7, 6)))
    book = np.asarray(jax.random.normal(jax.random.key(1), (50, 6)))
    z_q, codes, _ = vq.quantize(jnp.asarray(z), jnp.asarray(book), l2_norm=l2_norm, beta=0.25)
    if l2_norm:
        z = z / np.linalg.norm(z, axis=-1, keepdims=True)
        book = book / np.linalg.norm(book, axis=-1, keepdims=True)
    dist = ((z[..., None, :].astype(np.float64) - book) ** 2).sum(-1)  # [3, 5, 7, 50]
    np.testing.assert_array_equal(codes, dist.argmin(-1))
    np.testing.assert_allclose(z_q, book[codes], atol=1e-6)


def test_ties_pick_the_first_index():
    book = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    _, codes, _ = vq.quantize(jnp.array([[0.9, 0.1], [0.5, 0.5]]), book, l2_norm=False, beta=0.25)
    np.testing.assert_array_equal(codes, [0, 0])


def test_straight_through_gradient_and_losses():
    z = jax.random.normal(jax.random.key(0), (4, 3))
    book = jax.random.normal(jax.random.key(1), (8, 3))
    w = jax.random.normal(jax.random.key(2), (4, 3))
    # d/dz sum(w * z_q) = w: the quantizer passes the gradient straight through.
    g = jax.grad(lambda z: jnp.sum(w * vq.quantize(z, book, l2_norm=False, beta=0.25)[0]))(z)
    np.testing.assert_allclose(g, w, atol=1e-6)
    z_q, codes, aux = vq.quantize(z, book, l2_norm=False, beta=0.25)
    mse = float(jnp.mean((book[codes] - z) ** 2))
    np.testing.assert_allclose(aux["codebook_loss"], mse, rtol=1e-5)
    np.testing.assert_allclose(aux["commit_loss"], 0.25 * mse, rtol=1e-5)
    # The codebook loss moves only the codebook, the commitment loss only z.
    gz, gb = jax.grad(lambda z, b: vq.quantize(z, b, l2_norm=False, beta=0.25)[2]["codebook_loss"], (0, 1))(z, book)
    assert float(jnp.abs(gz).max()) == 0 and float(jnp.abs(gb).max()) > 0
    gz, gb = jax.grad(lambda z, b: vq.quantize(z, b, l2_norm=False, beta=0.25)[2]["commit_loss"], (0, 1))(z, book)
    assert float(jnp.abs(gz).max()) > 0 and float(jnp.abs(gb).max()) == 0


def test_reconstruction_gradient_reaches_the_encoder():
    cfg, params = make_vq(ch_mult=(1,))
    images = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3), minval=-1, maxval=1)

    def loss(p):
        recon, _, aux = vq.VQModel(cfg).apply({"params": p}, images)
        return jnp.mean((recon - images) ** 2) + aux["codebook_loss"] + aux["commit_loss"]

    grads = jax.jit(jax.grad(loss))(params)
    for part in ("encoder", "quant_conv", "quantize", "post_quant_conv", "decoder"):
        norm = sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(grads[part]))
        assert norm > 0, part
    assert float(jnp.abs(grads["encoder"]["conv_in"]["kernel"]).sum()) > 0


def test_usage_and_perplexity():
    book = jnp.eye(4)
    _, _, aux = vq.quantize(jnp.tile(book[:1], (6, 1)), book, l2_norm=False, beta=0.25)
    np.testing.assert_allclose([aux["usage"], aux["perplexity"]], [0.25, 1.0], rtol=1e-5)
    _, _, aux = vq.quantize(jnp.tile(book, (3, 1)), book, l2_norm=False, beta=0.25)
    np.testing.assert_allclose([aux["usage"], aux["perplexity"]], [1.0, 4.0], rtol=1e-5)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="norm_groups=32"):
        vq.VQConfig(ch=8, ch_mult=(1, 2)).validate()
    with pytest.raises(ValueError, match="different lengths"):
        vq.VQConfig(ch_mult=(1, 2), decoder_ch_mult=(1, 2, 2)).validate()
