"""The native decoding kernels: exact against NumPy and XLA, used by decoding where they apply, and optional."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ar_jax.backends.cpu import CpuBackend, kernels
from ar_jax.backends.xla import einsum_attention
from tests.helpers import kernels_built as built


def gemv(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """`kernels.rows_gemv` of `w [O, I]` (made into panels) and `x [R, I]`, jitted."""
    w = jnp.asarray(w)
    return np.asarray(jax.jit(kernels.rows_gemv, static_argnums=2)(kernels.to_panels(w), jnp.asarray(x), w.shape[0]))


def test_panels_round_trip():
    w = jnp.arange(37 * 5, dtype=jnp.float32).reshape(37, 5)
    p = kernels.to_panels(w)
    assert p.shape == (3, 5, 16) and float(p[1, 2, 3]) == float(w[19, 2]) and not p[2, :, 5:].any()  # zero padding
    np.testing.assert_array_equal(kernels.from_panels(p, 37), w)


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 16, 17, 40])
def test_rows_gemv_matches_numpy(rows):
    if not built():
        return
    rng = np.random.default_rng(rows)
    # 203 outputs: 12 panels and a partial one; 17 and 40 rows: chunks of 16 and a partial one
    for outs, ins in [(203, 77), (1, 5), (67, 16), (64, 3)]:
        w = rng.standard_normal((outs, ins), dtype=np.float32)
        x = rng.standard_normal((rows, ins), dtype=np.float32)
        np.testing.assert_allclose(gemv(w, x), x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-5, atol=1e-5)


def test_rows_gemv_avx2_path_matches_numpy():
    """The AVX2 code (what a CPU without AVX-512 runs), built with `-mno-avx512f` in a fresh process: on an AVX-512
    machine the tests above exercise the other path."""
    if not built():
        return
    code = textwrap.dedent("""
        import jax.numpy as jnp
        import numpy as np
        from ar_jax.backends.cpu import kernels
        assert kernels.available()
        rng = np.random.default_rng(0)
        for rows in (1, 2, 5, 6, 7, 12, 16, 17):
            w = jnp.asarray(rng.standard_normal((203, 77), dtype=np.float32))
            x = rng.standard_normal((rows, 77), dtype=np.float32)
            for dtype in (jnp.float32, jnp.bfloat16):
                wd = w.astype(dtype)
                got = np.asarray(kernels.rows_gemv(kernels.to_panels(wd), jnp.asarray(x), 203))
                want = x.astype(np.float64) @ np.asarray(wd, np.float64).T
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        print(kernels.library_path().name)
    """)
    env = {**os.environ, "AR_JAX_KERNEL_FLAGS": "-mno-avx512f"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] != kernels.library_path().name  # its own build, beside the default one


def test_rows_gemv_of_empty_shapes():
    if not built():
        return
    assert gemv(np.ones((203, 77), np.float32), np.ones((0, 77), np.float32)).shape == (0, 203)
    np.testing.assert_array_equal(gemv(np.ones((9, 0), np.float32), np.ones((3, 0), np.float32)),
                                  np.zeros((3, 9), np.float32))
    with pytest.raises(ValueError, match="cannot hold out=30"):
        kernels.rows_gemv(kernels.to_panels(jnp.ones((48, 4))), jnp.ones((2, 4)), 30)  # 3 panels hold 33-48


@pytest.mark.parametrize("G,length", [(1, 1), (1, 9), (2, 13), (3, 16)])
def test_decode_attention_matches_einsum_attention(G, length):
    if not built():
        return  # test_backends.py checks the fallback
    B, KV, M, D = 2, 2, 16, 12  # 12 lanes: vector steps and a tail
    q = jax.random.normal(jax.random.key(0), (B, KV, G, D))
    k, v = (jax.random.normal(jax.random.key(i), (B, KV, M, D)) for i in (1, 2))
    unwritten = jnp.arange(M)[None, None, :, None] >= length
    k, v = jnp.where(unwritten, 1e4, k), jnp.where(unwritten, 1e4, v)  # must never be read
    got = jax.jit(kernels.decode_attention, static_argnums=4)(q, k, v, jnp.int32(length), D ** -0.5)
    qh = q.reshape(B, 1, KV * G, D)
    want = einsum_attention(qh, k, v, (jnp.arange(M) < length)[None, None, None], D ** -0.5).reshape(B, KV, G, D)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 2, 16, 19])
def test_rows_gemv_reads_bfloat16_weights(rows):
    if not built():
        return  # test_backends.py checks the fallback
    rng = np.random.default_rng(rows)
    w = jnp.asarray(rng.standard_normal((203, 77), dtype=np.float32)).astype(jnp.bfloat16)  # [O, I]
    x = jnp.asarray(rng.standard_normal((rows, 77), dtype=np.float32)).astype(jnp.bfloat16)
    panels = kernels.to_panels(w)
    assert panels.dtype == jnp.bfloat16
    run = jax.jit(lambda x: CpuBackend(native=True, layout="panels").dense(x, panels, 1, (203,), jnp.float32))
    got = run(x)
    assert got.dtype == jnp.float32 and kernels.BF16_TARGET in run.lower(x).as_text()
    want = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T  # the bfloat16 values, summed exactly
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_decode_attention_reads_a_bfloat16_cache():
    if not built():
        return
    B, KV, G, M, D, length = 2, 2, 2, 16, 12, 11
    q = jax.random.normal(jax.random.key(0), (B, KV, G, D)).astype(jnp.bfloat16)
    k, v = (jax.random.normal(jax.random.key(i), (B, KV, M, D)).astype(jnp.bfloat16) for i in (1, 2))
    got = jax.jit(kernels.decode_attention, static_argnums=4)(q, k, v, jnp.int32(length), D ** -0.5)
    f32 = lambda a: a.astype(jnp.float32)
    want = einsum_attention(f32(q).reshape(B, 1, KV * G, D), f32(k), f32(v), (jnp.arange(M) < length)[None, None, None],
                            D ** -0.5).reshape(B, KV, G, D)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_calling_a_switched_off_kernel_says_so(monkeypatch):
    monkeypatch.setenv("AR_JAX_NATIVE_KERNELS", "0")
    with pytest.raises(RuntimeError, match="AR_JAX_NATIVE_KERNELS=0.*for_arrays"):
        kernels.rows_gemv(jnp.ones((1, 3, 16)), jnp.ones((2, 3)), 16)
