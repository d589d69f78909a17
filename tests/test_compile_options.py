"""Per-function XLA:CPU options: they reach the compiler, change no result, and stay off other backends."""

import jax
import jax.numpy as jnp
import numpy as np

from ar_jax.compile_options import EIGEN_CPU, cpu_jit, cpu_options


def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_options_only_on_cpu():
    assert cpu_options(EIGEN_CPU, "cpu") == EIGEN_CPU
    assert cpu_options(EIGEN_CPU, "gpu") is None and cpu_options(EIGEN_CPU, "tpu") is None


def test_eigen_options_reach_xla_and_keep_results():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 32, 32, 128)), jnp.float32)  # large enough for YNNPACK
    w = jnp.asarray(rng.standard_normal((3, 3, 128, 128)) * 0.05, jnp.float32)
    default = jax.jit(conv).lower(x, w).compile().as_text()
    eigen = jax.jit(conv, compiler_options=cpu_options(EIGEN_CPU, "cpu")).lower(x, w).compile().as_text()
    assert "ynn" in default.lower()  # XLA:CPU's default routes the convolution to YNNPACK ...
    assert "ynn" not in eigen.lower()  # ... and EIGEN_CPU takes it back (a renamed flag would fail here)
    np.testing.assert_allclose(np.asarray(cpu_jit(conv)(x, w)), np.asarray(jax.jit(conv)(x, w)), rtol=1e-5, atol=1e-5)


def test_cpu_jit_inside_another_jit_and_grad():
    """Inside a caller's jit (or grad) the options would be refused by JAX; it must run as a plain nested jit."""
    x = jnp.ones((1, 8, 8, 4))
    w = jnp.full((3, 3, 4, 4), 0.1)
    f = cpu_jit(conv)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda x, w: f(x, w) * 2)(x, w)), np.asarray(conv(x, w)) * 2,
                               rtol=1e-6)
    g = jax.grad(lambda w: f(x, w).sum())(w)
    np.testing.assert_allclose(np.asarray(g), np.asarray(jax.grad(lambda w: conv(x, w).sum())(w)), rtol=1e-6)


def test_cpu_jit_keeps_static_arguments():
    f = cpu_jit(lambda x, n: x * n, static_argnames="n")
    assert float(f(jnp.float32(2.0), n=3)) == 6.0
