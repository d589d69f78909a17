"""The native decoding kernels: exact against NumPy and XLA, used by decoding where they apply, and optional."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ar_jax import kernels
from ar_jax.models.transformer import cached_attention, project
from tests.conftest import make_test_model


def built() -> bool:
    """Whether the kernels must be on here: with a C++ compiler they must build; without one they must be off."""
    if not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")):
        assert not kernels.available()  # no compiler: decoding keeps XLA's products and attention
        return False
    assert kernels.available()
    return True


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6, 7, 12, 13, 16])
def test_rows_gemv_matches_numpy(rows):
    if not built():
        return
    rng = np.random.default_rng(rows)
    # 77 inputs: 9 vector steps and a 5-element tail; 203 outputs: blocks of 32, pairs, a last single output
    for outs, ins in [(203, 77), (1, 5), (67, 16)]:
        w = rng.standard_normal((outs, ins), dtype=np.float32)
        x = rng.standard_normal((rows, ins), dtype=np.float32)
        got = np.asarray(jax.jit(kernels.rows_gemv)(jnp.asarray(w), jnp.asarray(x)))
        np.testing.assert_allclose(got, x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-5, atol=1e-5)


def test_rows_gemv_of_empty_shapes():
    if not built():
        return
    w = jnp.ones((203, 77), jnp.bfloat16)
    assert jax.jit(kernels.rows_gemv)(w, jnp.ones((0, 77), jnp.float32)).shape == (0, 203)
    got = jax.jit(kernels.rows_gemv)(jnp.ones((9, 0), jnp.float32), jnp.ones((3, 0), jnp.float32))
    np.testing.assert_array_equal(got, np.zeros((3, 9), np.float32))


def test_projection_takes_the_kernel_for_2_to_16_rows_only(monkeypatch):
    w = jnp.asarray(np.random.default_rng(0).standard_normal((48, 32), dtype=np.float32))  # [out, in]
    x = jnp.asarray(np.random.default_rng(1).standard_normal((17, 32), dtype=np.float32))
    text = lambda rows: jax.jit(lambda x: project(x, w, out_in=True)).lower(x[:rows]).as_text()
    on = kernels.available()
    assert all((kernels.TARGET in text(rows)) == on for rows in (2, 3, 16))
    assert kernels.TARGET not in text(1)  # one row: XLA's matrix-vector product is as fast
    assert kernels.TARGET not in text(17)  # more rows: XLA's packed product is as fast
    x = x[:16]
    want = np.asarray(x) @ np.asarray(w).T
    np.testing.assert_allclose(jax.jit(lambda x: project(x, w, out_in=True))(x), want, rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("AR_JAX_NATIVE_KERNELS", "0")
    assert not kernels.available() and kernels.TARGET not in text(3)
    np.testing.assert_allclose(jax.jit(lambda x: project(x, w, out_in=True))(x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("labels", [[1], [1, 0, 2, 1, 2, 0, 2]])
def test_switched_off_kernel_gives_the_same_sampling_logits(monkeypatch, labels):
    from ar_jax import sampling

    cfg, params = make_test_model()
    dec_cfg, dec_params = cfg.decoding(params)
    run = lambda: sampling.generate(dec_params, dec_cfg, labels, jax.random.key(0), cfg_scale=2.0, greedy=True,
                                    return_logits=True)
    toks, logits = run()  # with CFG: 2 and 14 rows, the kernel's cases
    monkeypatch.setenv("AR_JAX_NATIVE_KERNELS", "0")
    jax.clear_caches()  # retrace: the choice is made when the sampler is traced
    toks_xla, logits_xla = run()
    np.testing.assert_array_equal(toks, toks_xla)
    np.testing.assert_allclose(logits, logits_xla, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("G,length", [(1, 1), (1, 9), (2, 13), (3, 16)])
def test_decode_attention_matches_cached_attention(G, length):
    if not built():
        return  # test_projection_takes_the_kernel_for_2_to_16_rows_only checks the fallback
    B, KV, M, D = 2, 2, 16, 12  # 12 lanes: vector steps and a tail
    q = jax.random.normal(jax.random.key(0), (B, KV, G, D))
    k, v = (jax.random.normal(jax.random.key(i), (B, KV, M, D)) for i in (1, 2))
    unwritten = jnp.arange(M)[None, None, :, None] >= length
    k, v = jnp.where(unwritten, 1e4, k), jnp.where(unwritten, 1e4, v)  # must never be read
    got = jax.jit(kernels.decode_attention, static_argnums=4)(q, k, v, jnp.int32(length), D ** -0.5)
    qh = q.reshape(B, 1, KV * G, D)
    want = cached_attention(qh, k, v, (jnp.arange(M) < length)[None], D ** -0.5).reshape(B, KV, G, D)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 2, 16])
def test_rows_gemv_reads_bfloat16_weights(rows):
    if not built():
        return  # test_projection_takes_the_kernel_for_2_to_16_rows_only checks the fallback
    rng = np.random.default_rng(rows)
    w = jnp.asarray(rng.standard_normal((203, 77), dtype=np.float32)).astype(jnp.bfloat16)
    x = jnp.asarray(rng.standard_normal((rows, 77), dtype=np.float32)).astype(jnp.bfloat16)
    got = jax.jit(kernels.rows_gemv)(w, x)
    assert got.dtype == jnp.float32
    want = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T  # the bfloat16 values, summed exactly
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    text = jax.jit(lambda x: project(x, w, out_in=True)).lower(x).as_text()
    assert kernels.BF16_TARGET in text  # bfloat16 weights take it from one row on


def test_decode_attention_reads_a_bfloat16_cache():
    if not built():
        return
    B, KV, G, M, D, length = 2, 2, 2, 16, 12, 11
    q = jax.random.normal(jax.random.key(0), (B, KV, G, D)).astype(jnp.bfloat16)
    k, v = (jax.random.normal(jax.random.key(i), (B, KV, M, D)).astype(jnp.bfloat16) for i in (1, 2))
    got = jax.jit(kernels.decode_attention, static_argnums=4)(q, k, v, jnp.int32(length), D ** -0.5)
    f32 = lambda a: a.astype(jnp.float32)
    want = cached_attention(f32(q).reshape(B, 1, KV * G, D), f32(k), f32(v), (jnp.arange(M) < length)[None],
                            D ** -0.5).reshape(B, KV, G, D)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_calling_a_switched_off_kernel_says_so(monkeypatch):
    monkeypatch.setenv("AR_JAX_NATIVE_KERNELS", "0")
    with pytest.raises(RuntimeError, match="AR_JAX_NATIVE_KERNELS=0.*usable"):
        kernels.rows_gemv(jnp.ones((4, 3)), jnp.ones((2, 3)))
