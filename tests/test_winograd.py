"""Winograd F(4x4, 3x3) convolutions: the direct convolution's values and gradients, used where they apply, and
the same parameters as `nn.Conv`."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ar_jax import backends
from ar_jax.backends.cpu import CpuBackend, kernels, winograd
from ar_jax.tokenizers.vq import Conv3x3
from tests.helpers import kernels_built as built


def draw(shape: tuple[int, int, int, int], features: int, seed: int = 0):
    kx, kk, kb = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(kx, shape), jax.random.normal(kk, (3, 3, shape[-1], features)) / (3 * shape[-1] ** 0.5),
            jax.random.normal(kb, (features,)))


# H, W not multiples of 4 (cropped tiles), a 1x1 image (every input but the centre is padding), and channel counts
# of 1, 3, 64 (one whole chunk), 70 and 130 (chunks with a remainder).
SHAPES = [((2, 8, 8, 3), 5), ((1, 7, 5, 4), 2), ((2, 9, 6, 70), 130), ((1, 1, 1, 2), 3), ((3, 4, 12, 64), 1)]


@pytest.mark.parametrize("shape,features", SHAPES)
def test_values_and_gradients_are_the_direct_convolutions(shape, features):
    if not built():
        return
    x, k, b = draw(shape, features)
    assert winograd.applies(x, k)
    assert "ar_jax_winograd_input" in jax.jit(winograd.conv3x3).lower(x, k, b).as_text()
    want = winograd.direct(x, k, b)
    got = jax.jit(winograd.conv3x3)(x, k, b)
    assert got.shape == want.shape and got.dtype == jnp.float32
    scale = float(jnp.abs(want).max())
    np.testing.assert_allclose(got, want, atol=3e-5 * scale, rtol=0)
    np.testing.assert_array_equal(winograd.direct(x, k, b), jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b)
    loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)))
    g_got = jax.jit(jax.grad(loss(winograd.conv3x3), argnums=(0, 1, 2)))(x, k, b)
    g_want = jax.grad(loss(winograd.direct), argnums=(0, 1, 2))(x, k, b)
    for a, c in zip(g_got, g_want):
        np.testing.assert_allclose(a, c, atol=3e-5 * float(jnp.abs(c).max()), rtol=0)


def test_off_the_fast_path_it_is_the_direct_convolution():
    x, k, b = draw((2, 8, 8, 3), 5)
    bf = [a.astype(jnp.bfloat16) for a in (x, k, b)]
    on = CpuBackend(native=kernels.available())
    assert not winograd.applies(bf[0], bf[1])
    np.testing.assert_array_equal(on.conv3x3(*bf), winograd.direct(*bf))
    off = CpuBackend(native=False)  # the kernels switched off: the direct convolution
    assert "ar_jax_winograd" not in jax.jit(off.conv3x3).lower(x, k, b).as_text()
    assert ("ar_jax_winograd" in jax.jit(on.conv3x3).lower(x, k, b).as_text()) == on.native
    np.testing.assert_array_equal(off.conv3x3(x, k, b), winograd.direct(x, k, b))
    np.testing.assert_array_equal(backends.XLA.conv3x3(x, k, b), winograd.direct(x, k, b))


def test_kernel_transform_is_g_g_gt():
    k = jax.random.normal(jax.random.key(1), (3, 3, 4, 5))
    want = np.einsum("ai,ijco,bj->abco", winograd.G, np.asarray(k, np.float64), winograd.G).reshape(36, 4, 5)
    np.testing.assert_allclose(winograd.transform_kernel(k), want, rtol=1e-6, atol=1e-7)


def test_conv3x3_module_has_nn_convs_parameters():
    """Same names, shapes and initial values as the `nn.Conv` it replaced: checkpoints and LlamaGen imports hold."""
    x = jnp.ones((1, 8, 8, 6))
    ours = Conv3x3(4, jnp.float32).init(jax.random.key(3), x)
    theirs = nn.Conv(4, (3, 3), padding=1).init(jax.random.key(3), x)
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)
    np.testing.assert_allclose(Conv3x3(4, jnp.float32).apply(ours, x), nn.Conv(4, (3, 3), padding=1).apply(theirs, x),
                               rtol=1e-5, atol=1e-5)


def test_transforms_reject_wrong_shapes():
    if not built():
        return
    with pytest.raises(Exception, match="winograd_output"):
        jax.jit(lambda m, b: kernels.winograd_output(m, b, (1, 4, 4, 3)))(jnp.ones((36, 2, 3)), jnp.ones(3))


def test_batch_in_chunks_is_the_same_convolution(monkeypatch):
    if not built():
        return
    x, k, b = draw((6, 8, 8, 16), 8, seed=5)
    whole = jax.jit(lambda *a: winograd.conv3x3(*a))(x, k, b)
    per_image = 36 * 4 * 16 * 4  # bytes of one image's transformed tiles
    monkeypatch.setattr(winograd, "CHUNK_BYTES", 2 * per_image)
    assert winograd.images_per_chunk(x.shape, 8) == 2
    text = jax.jit(lambda *a: winograd.conv3x3(*a)).lower(x, k, b).as_text()
    assert "while" in text  # lax.map over 3 chunks of 2 images
    np.testing.assert_array_equal(jax.jit(lambda *a: winograd.conv3x3(*a))(x, k, b), whole)
    monkeypatch.setattr(winograd, "CHUNK_BYTES", 1)
    assert winograd.images_per_chunk((7, 8, 8, 16), 8) == 1  # never less than one image
