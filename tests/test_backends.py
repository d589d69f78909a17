"""The platform seam: every backend's operations equal the XLA reference's, the choice is made from the devices,
and nothing outside `ar_jax/backends` looks at the platform."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ar_jax import backends
from ar_jax.backends import cpu
from ar_jax.backends.cpu import CpuBackend, blockwise_causal_attention, cpu_dense, kernels
from ar_jax.backends.cpu.compile_options import EIGEN_CPU
from ar_jax.backends.tpu import TpuBackend
from ar_jax.backends.xla import CACHED_QUERY_MAX, einsum_attention, written_attention
from ar_jax.models.transformer import PROJECTIONS, Transformer, init_cache, prepare
from tests.helpers import cached_logits, make_test_model

ROOT = Path(__file__).resolve().parents[1]


def relayout(params, layout):
    return cpu._relayout(params, tuple(sorted(PROJECTIONS.items())), layout)


# The choice -----------------------------------------------------------------------------------------------------

def test_the_backend_comes_from_the_devices_the_arrays_live_on():
    cfg, params = make_test_model()
    be = backends.for_arrays(params)
    assert isinstance(be, CpuBackend) and be.native == kernels.available() and be.layout == "in_out"
    assert backends.for_platform("gpu").platform == "gpu" and backends.for_platform("tpu").platform == "tpu"
    prepared = prepare(params)
    assert backends.for_arrays(prepared) is prepared.backend and prepare(prepared) is prepared  # made once


@pytest.mark.parametrize("platform,attention", [("cpu", "cudnn"), ("cpu", "splash"), ("gpu", "splash"),
                                                ("tpu", "cudnn"), ("cpu", "flash3")])
def test_an_attention_that_cannot_run_here_is_refused_naming_the_alternatives(platform, attention):
    with pytest.raises(ValueError, match=f"attention={attention!r}") as e:
        backends.for_platform(platform, attention)
    assert "xla" in str(e.value)


def test_training_refuses_such_an_attention_before_compiling(tmp_path):
    from ar_jax.training import trainer
    from tests.helpers import smoke_config

    with pytest.raises(ValueError, match="attention='cudnn' cannot run on platform 'cpu'"):
        trainer.train_and_evaluate(smoke_config(**{"backend.attention": "cudnn"}), tmp_path / "w")
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_platform_code_lives_only_behind_the_seam():
    """`default_backend`, device counts and the native kernels are named only inside ar_jax/backends."""
    pattern = re.compile(r"default_backend|device_count\(\)|backends\.cpu|kernels\.|winograd|(?<!\.)compile_options")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "ar_jax").rglob("*.py")
                 if "backends" not in p.parts
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders
    model = (ROOT / "ar_jax" / "models" / "transformer.py").read_text()
    assert not re.search(r"cpu|panels|out_in|weight_layout", model.lower())  # no CPU code, no layout branches


# Dense projections and the decode layouts ------------------------------------------------------------------------

@pytest.mark.parametrize("layout,kv_heads", [("out_in", 4), ("out_in", 2), ("panels", 4), ("panels", 2)])
def test_decode_layout_gives_the_same_logits(layout, kv_heads):
    """The CPU decode layouts' weights, through the cache and in teacher forcing (prefill rows: more than 16)."""
    cfg, params = make_test_model(num_kv_heads=kv_heads)
    tokens = jax.random.randint(jax.random.key(4), (3, cfg.seq_len), 0, cfg.vocab_size)
    labels = jnp.array([2, 0, 1])
    tf, _ = Transformer(cfg).apply({"params": params}, tokens[:, :-1], labels)
    moved = relayout(params, layout)
    wo, out = moved["layers_0"]["attention"]["wo"], moved["output"]
    if layout == "out_in":
        assert wo.shape == (cfg.dim, cfg.num_heads, cfg.head_dim) and out.shape == (cfg.vocab_size, cfg.dim)
    else:
        assert wo.shape == (-(-cfg.dim // 16), cfg.dim, 16) and out.shape == (-(-cfg.vocab_size // 16), cfg.dim, 16)
    dec = CpuBackend(native=kernels.available(), layout=layout)
    tf_t, _ = Transformer(cfg, dec).apply({"params": moved}, tokens[:, :-1], labels)
    np.testing.assert_allclose(tf_t, tf, atol=1e-5)
    kv = cached_logits(cfg, moved, tokens, labels, dec)
    np.testing.assert_allclose(kv, tf[:, cfg.cls_token_num - 1:], atol=1e-5)


def test_prepare_picks_the_layout_from_the_kernels():
    cfg, params = make_test_model()
    on = CpuBackend(native=True).prepare(params, PROJECTIONS)
    off = CpuBackend(native=False).prepare(params, PROJECTIONS)
    assert on.backend.layout == "panels" and off.backend.layout == "out_in"
    assert backends.XLA.prepare(params, PROJECTIONS).params is params  # the reference decodes the trained layout


def test_projection_takes_the_kernel_in_the_panels_layout():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4, 40), dtype=np.float32)  # [*in, *out], n_in=2
    x = jnp.asarray(rng.standard_normal((17, 2, 3, 4), dtype=np.float32))
    panels = kernels.to_panels(jnp.asarray(w.reshape(12, 40).T))
    want = (np.asarray(x).reshape(34, 12) @ w.reshape(12, 40)).reshape(17, 2, 5, 8)
    for native in (kernels.available(), False):  # the layout kept, the kernels gone: XLA's product
        be = CpuBackend(native=native, layout="panels")
        run = jax.jit(lambda x, be=be: be.dense(x, panels, 2, (5, 8)))
        assert (kernels.TARGET in run.lower(x).as_text()) == native
        np.testing.assert_allclose(run(x), want, rtol=1e-5, atol=1e-5)
    ref = backends.XLA.dense(x, jnp.asarray(w).reshape(3, 4, 5, 8), 2, (5, 8))
    np.testing.assert_allclose(ref, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,out_dtype", [(jnp.float32, jnp.float32), (jnp.bfloat16, jnp.float32),
                                             (jnp.bfloat16, jnp.bfloat16)])
def test_cpu_dense_gradients_equal_autodiff_and_avoid_the_folded_transpose(dtype, out_dtype):
    x = jax.random.normal(jax.random.key(0), (64, 32), dtype)
    w = jax.random.normal(jax.random.key(1), (32, 48), dtype)
    g = jax.random.normal(jax.random.key(2), (64, 48), out_dtype)
    ours = lambda x, w: jnp.sum(cpu_dense(x, w, jnp.dtype(out_dtype)).astype(jnp.float32) * g)
    plain = lambda x, w: jnp.sum(jnp.dot(x, w, preferred_element_type=out_dtype).astype(jnp.float32) * g)
    for got, want in zip(jax.grad(ours, (0, 1))(x, w), jax.grad(plain, (0, 1))(x, w), strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got.astype(float), want.astype(float), rtol=1e-6)
    hlo = lambda f: jax.jit(jax.grad(f, (0, 1))).lower(x, w).compile().as_text()
    assert "lhs_contracting_dims={0}" not in hlo(ours)  # the weight gradient multiplies a copy of x.T
    if jax.devices()[0].platform == "cpu" and dtype == jnp.float32:
        assert "lhs_contracting_dims={0}" in hlo(plain)  # what autodiff leaves to XLA:CPU (the slow Eigen form)


# Attention -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("S,KV", [(1, 4), (3, 2), (CACHED_QUERY_MAX, 1)])
def test_einsum_attention_equals_dot_product_attention(S, KV):
    B, H, M, D = 2, 4, 11, 8
    q = jax.random.normal(jax.random.key(0), (B, S, H, D))
    k, v = (jax.random.normal(jax.random.key(i), (B, KV, M, D)) for i in (1, 2))
    mask = (jnp.arange(M)[None, :] <= 5 + jnp.arange(S)[:, None])[None, None]  # [1, 1, S, M]: written so far
    want = jax.nn.dot_product_attention(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), mask=mask,
                                        scale=D ** -0.5)
    np.testing.assert_allclose(einsum_attention(q, k, v, mask, D ** -0.5), want, atol=1e-5)


@pytest.mark.parametrize("length", [1, 8, 9, 31, 32])
def test_written_attention_equals_einsum_attention(length):
    """One new position over the first `length` of 32 cache entries, read in blocks of 8: the full-cache result."""
    B, H, KV, M, D = 2, 4, 2, 32, 8
    q = jax.random.normal(jax.random.key(0), (B, 1, H, D))
    k, v = (jax.random.normal(jax.random.key(i), (B, KV, M, D)) for i in (1, 2))
    k = k.at[:, :, length:].set(1e4)  # unwritten entries must not be read
    want = einsum_attention(q, k, v, (jnp.arange(M) < length)[None, None, None], D ** -0.5)
    got = jax.jit(written_attention, static_argnums=(4, 5))(q, k, v, jnp.int32(length), D ** -0.5, 8)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_written_attention_reads_a_bfloat16_cache():
    B, H, KV, M, D = 1, 2, 1, 16, 8
    q = jax.random.normal(jax.random.key(0), (B, 1, H, D))
    k, v = (jax.random.normal(jax.random.key(i), (B, KV, M, D)).astype(jnp.bfloat16) for i in (1, 2))
    got = written_attention(q, k, v, jnp.int32(11), D ** -0.5, 4)
    assert got.dtype == jnp.float32
    want = einsum_attention(q, k.astype(jnp.float32), v.astype(jnp.float32), (jnp.arange(M) < 11)[None, None, None],
                            D ** -0.5)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_decoding_over_written_blocks_equals_teacher_forcing(monkeypatch):
    """With WRITTEN_BLOCK lowered to 4, the reference's one-token steps read by blocks, with teacher forcing's
    logits."""
    from ar_jax.backends import xla

    calls = []
    monkeypatch.setattr(xla, "WRITTEN_BLOCK", 4)
    monkeypatch.setattr(xla, "written_attention", lambda *a, **kw: calls.append(1) or written_attention(*a, **kw))
    cfg, params = make_test_model(num_kv_heads=2, rope="1d", seq_len=15)  # cache of 1 + 15 = 16 entries: 4 blocks
    tokens = jax.random.randint(jax.random.key(6), (2, cfg.seq_len), 0, cfg.vocab_size)
    labels = jnp.array([1, 0])
    tf, _ = jax.jit(lambda t: Transformer(cfg).apply({"params": params}, t, labels))(tokens[:, :-1])
    kv = cached_logits(cfg, params, tokens, labels, backends.XLA)
    assert calls  # the blocked path was traced
    np.testing.assert_allclose(kv, tf[:, cfg.cls_token_num - 1:], atol=1e-5)


def test_decoding_through_the_attention_kernel_equals_teacher_forcing():
    """The CPU backend's one-token steps take the native attention kernel (where built), with teacher forcing's
    logits; the reference never does."""
    cfg, params = make_test_model(num_kv_heads=2, rope="1d", seq_len=15)  # 2 query heads a KV head
    tokens = jax.random.randint(jax.random.key(6), (2, cfg.seq_len), 0, cfg.vocab_size)
    labels = jnp.array([1, 0])
    be = backends.for_arrays(params)
    for b, on in ((be, kernels.available()), (backends.XLA, False)):
        step = jax.jit(lambda t, c, b=b: Transformer(cfg, b).apply({"params": params}, t, None, start=5, cache=c))
        assert (kernels.ATTENTION_TARGET in step.lower(tokens[:, :1], init_cache(cfg, 2, 16)).as_text()) == on
    tf, _ = jax.jit(lambda t: Transformer(cfg).apply({"params": params}, t, labels))(tokens[:, :-1])
    np.testing.assert_allclose(cached_logits(cfg, params, tokens, labels, be), tf[:, cfg.cls_token_num - 1:],
                               atol=1e-5)


def test_bfloat16_decoding_through_the_kernels_matches_xla():
    """A bfloat16 model prepared for decoding: the native kernels' logits are XLA's, to bfloat16 rounding."""
    cfg, params = make_test_model(num_kv_heads=2, rope="1d", seq_len=15, dtype="bfloat16")
    dec = prepare(jax.tree.map(lambda p: p.astype(jnp.bfloat16), params))
    tokens = jax.random.randint(jax.random.key(6), (2, cfg.seq_len), 0, cfg.vocab_size)
    labels = jnp.array([1, 0])
    step = lambda be: jax.jit(lambda t, c: Transformer(cfg, be).apply({"params": dec.params}, t, None, start=5,
                                                                       cache=c)).lower(
        tokens[:, :1], init_cache(cfg, 2, 16)).as_text()
    on = kernels.available()
    hlo = step(dec.backend)
    assert (kernels.BF16_TARGET in hlo) == on and (kernels.ATTENTION_BF16_TARGET in hlo) == on
    off = dec.backend.replace(native=False)  # the layout kept, the kernels gone
    assert kernels.BF16_TARGET not in step(off)
    native = cached_logits(cfg, dec.params, tokens, labels, dec.backend)
    xla = cached_logits(cfg, dec.params, tokens, labels, off)
    np.testing.assert_allclose(native, xla, atol=0.02 * float(jnp.abs(xla).max()))  # measured: 0.004


@pytest.mark.parametrize("labels", [[1], [1, 0, 2, 1, 2, 0, 2]])
def test_switched_off_kernels_give_the_same_sampling_logits(labels):
    from ar_jax.decode import sampling

    cfg, params = make_test_model()
    run = lambda p: sampling.generate(p, cfg, labels, jax.random.key(0), cfg_scale=2.0, greedy=True,
                                      return_logits=True)
    toks, logits = run(prepare(params))  # with CFG: 2 and 14 rows, the kernel's cases
    toks_xla, logits_xla = run(prepare(params, CpuBackend(native=False)))  # a new backend: a new compilation
    toks_ref, logits_ref = run(prepare(params, backends.XLA))
    np.testing.assert_array_equal(toks, toks_xla)
    np.testing.assert_array_equal(toks, toks_ref)
    np.testing.assert_allclose(logits, logits_xla, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits, logits_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("S,KV,block", [(37, 4, 8), (24, 2, 8), (5, 1, 8)])
def test_blockwise_causal_attention_equals_full(S, KV, block):
    B, H, D = 2, 4, 8
    q = jax.random.normal(jax.random.key(0), (B, S, H, D))
    k, v = (jax.random.normal(jax.random.key(i), (B, S, KV, D)) for i in (1, 2))
    want = jax.jit(jax.nn.dot_product_attention, static_argnames="scale")(
        q, k, v, mask=jnp.tril(jnp.ones((S, S), bool))[None, None], scale=D ** -0.5)
    got = jax.jit(blockwise_causal_attention, static_argnums=(3, 4))(q, k, v, D ** -0.5, block)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_blockwise_causal_attention_equals_full_with_gradients(dtype):
    """Grouped heads (G = 3), two query blocks, the dtype's rounding: values and all three gradients."""
    B, S, H, KV, D = 2, 12, 6, 2, 8
    q = jax.random.normal(jax.random.key(0), (B, S, H, D), dtype)
    k, v, g = (jax.random.normal(jax.random.key(i), (B, S, n, D), dtype) for i, n in ((1, KV), (2, KV), (3, H)))
    mask = jnp.tril(jnp.ones((S, S), bool))[None, None]
    full = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask, scale=D ** -0.5)
    blocks = lambda q, k, v: blockwise_causal_attention(q, k, v, D ** -0.5, 8)
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    for f in (full, blocks):
        assert f(q, k, v).dtype == dtype
    np.testing.assert_allclose(blocks(q, k, v).astype(float), full(q, k, v).astype(float), atol=tol)
    for got, want in zip(jax.vjp(blocks, q, k, v)[1](g), jax.vjp(full, q, k, v)[1](g), strict=True):
        want = want.astype(float)
        np.testing.assert_allclose(got.astype(float), want, atol=tol * max(1.0, np.abs(want).max()))


def test_long_sequences_take_the_blockwise_path_with_the_same_logits(monkeypatch):
    """A model longer than ATTENTION_BLOCK (here lowered to 8) gives the reference's logits, causally."""
    cfg, params = make_test_model(num_kv_heads=2, rope="1d", seq_len=30)
    tokens = jax.random.randint(jax.random.key(5), (2, cfg.seq_len), 0, cfg.vocab_size)
    labels = jnp.array([1, 2])
    run = lambda t, be: jax.jit(lambda t: Transformer(cfg, be).apply({"params": params}, t, labels)[0])(t)
    full = run(tokens, backends.XLA)
    monkeypatch.setattr(cpu, "ATTENTION_BLOCK", 8)
    be = CpuBackend()
    assert "bkgqd,bkmd->bkgqm" not in str(jax.make_jaxpr(lambda t: run(t, backends.XLA))(tokens))
    blocks = run(tokens, be)
    np.testing.assert_allclose(blocks, full, atol=1e-5)
    changed = run(tokens.at[:, 20].set((tokens[:, 20] + 1) % cfg.vocab_size), be)
    np.testing.assert_array_equal(changed[:, :21], blocks[:, :21])  # outputs before the change do not move


@pytest.mark.parametrize("kv,causal,S", [(2, True, 128), (4, True, 65), (1, False, 128)])
def test_splash_attention_in_interpret_mode_equals_xla(kv, causal, S):
    """The Pallas TPU splash kernel, run by Pallas' interpreter on CPU: the reference's numbers (float32, GQA; a
    causal length that is not a multiple of 128 padded)."""
    B, H, D = 2, 4, 16
    q = jax.random.normal(jax.random.key(0), (B, S, H, D))
    k, v = (jax.random.normal(jax.random.key(i), (B, S, kv, D)) for i in (1, 2))
    tpu = TpuBackend(attention_impl="splash", interpret=True)
    got = tpu.attention(q, k, v, causal=causal, mask=None, scale=D ** -0.5)
    want = backends.XLA.attention(q, k, v, causal=causal, mask=None, scale=D ** -0.5)
    np.testing.assert_allclose(got, want, atol=2e-5)


# Compile options -------------------------------------------------------------------------------------------------

def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_compile_options_only_on_cpu():
    assert CpuBackend().compile_options("conv") == EIGEN_CPU and CpuBackend().compile_options("decode") is None
    assert backends.for_platform("gpu").compile_options("conv") is None
    assert backends.for_platform("tpu").compile_options("conv") is None


def test_eigen_options_reach_xla_and_keep_results():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 32, 32, 128)), jnp.float32)  # large enough for YNNPACK
    w = jnp.asarray(rng.standard_normal((3, 3, 128, 128)) * 0.05, jnp.float32)
    default = jax.jit(conv).lower(x, w).compile().as_text()
    eigen = jax.jit(conv, compiler_options=EIGEN_CPU).lower(x, w).compile().as_text()
    assert "ynn" in default.lower()  # XLA:CPU's default routes the convolution to YNNPACK ...
    assert "ynn" not in eigen.lower()  # ... and EIGEN_CPU takes it back (a renamed flag would fail here)
    np.testing.assert_allclose(np.asarray(backends.jit(conv)(x, w)), np.asarray(jax.jit(conv)(x, w)), rtol=1e-5,
                               atol=1e-5)


def test_backend_jit_inside_another_jit_and_grad():
    """Inside a caller's jit (or grad) the options would be refused by JAX; it must run as a plain nested jit."""
    x = jnp.ones((1, 8, 8, 4))
    w = jnp.full((3, 3, 4, 4), 0.1)
    f = backends.jit(conv)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda x, w: f(x, w) * 2)(x, w)), np.asarray(conv(x, w)) * 2,
                               rtol=1e-6)
    g = jax.grad(lambda w: f(x, w).sum())(w)
    np.testing.assert_allclose(np.asarray(g), np.asarray(jax.grad(lambda w: conv(x, w).sum())(w)), rtol=1e-6)


def test_backend_jit_keeps_static_arguments():
    f = backends.jit(lambda x, n: x * n, static_argnames="n")
    assert float(f(jnp.float32(2.0), n=3)) == 6.0
