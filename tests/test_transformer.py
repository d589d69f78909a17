"""The decoder: cache path equals teacher forcing, causality, grouped-query attention, 1-D/2-D RoPE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ar_jax.models.transformer import (
    CACHED_QUERY_MAX,
    Transformer,
    blockwise_causal_attention,
    cached_attention,
    cpu_dense,
    init_cache,
    init_params,
    rope_table,
    to_out_in,
    to_panels,
    written_attention,
)
from tests.conftest import make_test_model


def cached_logits(cfg, params, tokens, labels):
    """Prefill the class token, then feed tokens one at a time through the cache: `[B, T, V]`."""
    model = Transformer(cfg)
    cache = init_cache(cfg, tokens.shape[0])
    step = jax.jit(lambda t, c, s: model.apply({"params": params}, t, None, start=s, cache=c))
    out, cache = jax.jit(lambda c: model.apply({"params": params}, None, labels, start=0, cache=c))(cache)
    outs = [out[:, -1]]
    for t in range(tokens.shape[1] - 1):
        out, cache = step(tokens[:, t:t + 1], cache, cfg.cls_token_num + t)
        outs.append(out[:, -1])
    return jnp.stack(outs, 1)


@pytest.mark.parametrize("overrides", [{}, {"num_kv_heads": 2}, {"num_kv_heads": 1, "rope": "1d"},
                                       {"cls_token_num": 3, "rope": "1d"}])
def test_cache_logits_equal_teacher_forcing(overrides):
    cfg, params = make_test_model(**overrides)
    tokens = jax.random.randint(jax.random.key(2), (2, cfg.seq_len), 0, cfg.vocab_size)
    labels = jnp.array([0, 2])
    tf, _ = jax.jit(lambda t: Transformer(cfg).apply({"params": params}, t, labels))(tokens[:, :-1])
    tf = tf[:, cfg.cls_token_num - 1:]
    kv = cached_logits(cfg, params, tokens, labels)
    assert tf.shape == kv.shape == (2, cfg.seq_len, cfg.vocab_size)
    np.testing.assert_allclose(kv, tf, atol=1e-5)
    assert float(jnp.abs(tf).max()) > 0.1  # logits are not trivially zero


@pytest.mark.parametrize("layout,kv_heads", [("out_in", 4), ("out_in", 2), ("panels", 4), ("panels", 2)])
def test_decode_layout_gives_the_same_logits(layout, kv_heads):
    """The CPU decode layouts' weights, through the cache and in teacher forcing (prefill rows: more than 16)."""
    cfg, params = make_test_model(num_kv_heads=kv_heads)
    tokens = jax.random.randint(jax.random.key(4), (3, cfg.seq_len), 0, cfg.vocab_size)
    labels = jnp.array([2, 0, 1])
    tf, _ = Transformer(cfg).apply({"params": params}, tokens[:, :-1], labels)
    moved = (to_out_in if layout == "out_in" else to_panels)(params)
    wo, out = moved["layers_0"]["attention"]["wo"], moved["output"]
    if layout == "out_in":
        assert wo.shape == (cfg.dim, cfg.num_heads, cfg.head_dim) and out.shape == (cfg.vocab_size, cfg.dim)
    else:
        assert wo.shape == (-(-cfg.dim // 16), cfg.dim, 16) and out.shape == (-(-cfg.vocab_size // 16), cfg.dim, 16)
    dec = cfg.replace(weight_layout=layout)
    tf_t, _ = Transformer(dec).apply({"params": moved}, tokens[:, :-1], labels)
    np.testing.assert_allclose(tf_t, tf, atol=1e-5)
    kv = cached_logits(dec, moved, tokens, labels)
    np.testing.assert_allclose(kv, tf[:, cfg.cls_token_num - 1:], atol=1e-5)


@pytest.mark.parametrize("S,KV", [(1, 4), (3, 2), (CACHED_QUERY_MAX, 1)])
def test_cached_attention_equals_dot_product_attention(S, KV):
    B, H, M, D = 2, 4, 11, 8
    q = jax.random.normal(jax.random.key(0), (B, S, H, D))
    k, v = (jax.random.normal(jax.random.key(i), (B, KV, M, D)) for i in (1, 2))
    mask = jnp.arange(M)[None, :] <= 5 + jnp.arange(S)[:, None]  # [S, M]: positions written so far
    want = jax.nn.dot_product_attention(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), mask=mask[None, None],
                                        scale=D ** -0.5)
    np.testing.assert_allclose(cached_attention(q, k, v, mask, D ** -0.5), want, atol=1e-5)


@pytest.mark.parametrize("length", [1, 8, 9, 31, 32])
def test_written_attention_equals_cached_attention(length):
    """One new position over the first `length` of 32 cache entries, read in blocks of 8: the full-cache result."""
    B, H, KV, M, D = 2, 4, 2, 32, 8
    q = jax.random.normal(jax.random.key(0), (B, 1, H, D))
    k, v = (jax.random.normal(jax.random.key(i), (B, KV, M, D)) for i in (1, 2))
    k = k.at[:, :, length:].set(1e4)  # unwritten entries must not be read
    want = cached_attention(q, k, v, (jnp.arange(M) < length)[None], D ** -0.5)
    got = jax.jit(written_attention, static_argnums=(4, 5))(q, k, v, jnp.int32(length), D ** -0.5, 8)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_written_attention_reads_a_bfloat16_cache():
    B, H, KV, M, D = 1, 2, 1, 16, 8
    q = jax.random.normal(jax.random.key(0), (B, 1, H, D))
    k, v = (jax.random.normal(jax.random.key(i), (B, KV, M, D)).astype(jnp.bfloat16) for i in (1, 2))
    got = written_attention(q, k, v, jnp.int32(11), D ** -0.5, 4)
    assert got.dtype == jnp.float32
    want = cached_attention(q, k.astype(jnp.float32), v.astype(jnp.float32), (jnp.arange(M) < 11)[None], D ** -0.5)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_decoding_over_written_blocks_equals_teacher_forcing(monkeypatch):
    """With WRITTEN_BLOCK lowered to 4, one-token steps take `written_attention`, with teacher forcing's logits."""
    import ar_jax.models.transformer as tr

    calls = []
    monkeypatch.setenv("AR_JAX_NATIVE_KERNELS", "0")  # the native kernel would take these steps on CPU
    monkeypatch.setattr(tr, "WRITTEN_BLOCK", 4)
    monkeypatch.setattr(tr, "written_attention", lambda *a, **kw: calls.append(1) or written_attention(*a, **kw))
    cfg, params = make_test_model(num_kv_heads=2, rope="1d", seq_len=15)  # cache of 1 + 15 = 16 entries: 4 blocks
    tokens = jax.random.randint(jax.random.key(6), (2, cfg.seq_len), 0, cfg.vocab_size)
    labels = jnp.array([1, 0])
    tf, _ = jax.jit(lambda t: Transformer(cfg).apply({"params": params}, t, labels))(tokens[:, :-1])
    kv = cached_logits(cfg, params, tokens, labels)
    assert calls  # the blocked path was traced
    np.testing.assert_allclose(kv, tf[:, cfg.cls_token_num - 1:], atol=1e-5)


def test_decoding_through_the_attention_kernel_equals_teacher_forcing():
    """On CPU one-token steps take the native attention kernel (where it is built), with teacher forcing's logits."""
    from ar_jax import kernels

    cfg, params = make_test_model(num_kv_heads=2, rope="1d", seq_len=15)  # 2 query heads a KV head
    tokens = jax.random.randint(jax.random.key(6), (2, cfg.seq_len), 0, cfg.vocab_size)
    labels = jnp.array([1, 0])
    step = jax.jit(lambda t, c: Transformer(cfg).apply({"params": params}, t, None, start=5, cache=c))
    hlo = step.lower(tokens[:, :1], init_cache(cfg, 2, 16)).as_text()
    assert (kernels.ATTENTION_TARGET in hlo) == kernels.available()
    tf, _ = jax.jit(lambda t: Transformer(cfg).apply({"params": params}, t, labels))(tokens[:, :-1])
    np.testing.assert_allclose(cached_logits(cfg, params, tokens, labels), tf[:, cfg.cls_token_num - 1:], atol=1e-5)


def test_bfloat16_decoding_through_the_kernels_matches_xla(monkeypatch):
    """A bfloat16 model in the decode layout: the native kernels' logits are XLA's, to bfloat16 rounding."""
    from ar_jax import kernels

    cfg, params = make_test_model(num_kv_heads=2, rope="1d", seq_len=15, dtype="bfloat16")
    dec_cfg, dec_params = cfg.decoding(jax.tree.map(lambda p: p.astype(jnp.bfloat16), params))
    tokens = jax.random.randint(jax.random.key(6), (2, cfg.seq_len), 0, cfg.vocab_size)
    labels = jnp.array([1, 0])
    step = lambda: jax.jit(lambda t, c: Transformer(dec_cfg).apply({"params": dec_params}, t, None, start=5, cache=c)
                           ).lower(tokens[:, :1], init_cache(dec_cfg, 2, 16)).as_text()
    on = kernels.available()
    assert (kernels.BF16_TARGET in step()) == on and (kernels.ATTENTION_BF16_TARGET in step()) == on
    native = cached_logits(dec_cfg, dec_params, tokens, labels)
    monkeypatch.setenv("AR_JAX_NATIVE_KERNELS", "0")
    assert kernels.BF16_TARGET not in step()
    xla = cached_logits(dec_cfg, dec_params, tokens, labels)
    np.testing.assert_allclose(native, xla, atol=0.02 * float(jnp.abs(xla).max()))  # measured: 0.004


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
    if jax.default_backend() == "cpu" and dtype == jnp.float32:
        assert "lhs_contracting_dims={0}" in hlo(plain)  # what autodiff leaves to XLA:CPU (the slow Eigen form)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_token_nll_value_and_gradient_equal_autodiffs_log_softmax(dtype):
    """losses.token_nll's hand-written gradient is autodiff's through log_softmax + take_along_axis, under jit and
    vmap, for float32 and bfloat16 logits (computed in float32 inside)."""
    from ar_jax.models import losses

    logits = (3 * jax.random.normal(jax.random.key(0), (2, 5, 7, 33))).astype(dtype)
    tokens = jax.random.randint(jax.random.key(1), (2, 5, 7), 0, 33)
    g = jax.random.normal(jax.random.key(2), (2, 5, 7))

    def plain(x, t):
        logp = jax.nn.log_softmax(x.astype(jnp.float32), axis=-1)
        return -jnp.take_along_axis(logp, t[..., None], axis=-1)[..., 0]

    got, want = jax.jit(losses.token_nll)(logits, tokens), plain(logits, tokens)
    assert got.shape == tokens.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(losses.token_nll)(logits, tokens), want, rtol=1e-6, atol=1e-6)
    grad = lambda f: jax.jit(jax.grad(lambda x: jnp.sum(f(x, tokens) * g)))(logits)
    got_g, want_g = grad(losses.token_nll), grad(plain)
    assert got_g.dtype == logits.dtype
    np.testing.assert_allclose(got_g.astype(float), want_g.astype(float), rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(got_g.astype(float)).max()) > 0.1  # a gradient that could be wrong


def test_long_sequences_take_the_blockwise_path_with_the_same_logits(monkeypatch):
    """A model longer than ATTENTION_BLOCK (here lowered to 8) gives the logits of full attention, causally."""
    import ar_jax.models.transformer as tr

    cfg, params = make_test_model(num_kv_heads=2, rope="1d", seq_len=30)
    tokens = jax.random.randint(jax.random.key(5), (2, cfg.seq_len), 0, cfg.vocab_size)
    labels = jnp.array([1, 2])
    run = lambda t: jax.jit(lambda t: Transformer(cfg).apply({"params": params}, t, labels)[0])(t)  # traced anew
    full = run(tokens)
    monkeypatch.setattr(tr, "ATTENTION_BLOCK", 8)
    blocks = run(tokens)
    np.testing.assert_allclose(blocks, full, atol=1e-5)
    changed = run(tokens.at[:, 20].set((tokens[:, 20] + 1) % cfg.vocab_size))
    np.testing.assert_array_equal(changed[:, :21], blocks[:, :21])  # outputs before the change do not move


@pytest.mark.parametrize("n", [5, 12])  # within CACHED_QUERY_MAX new positions, and beyond it
def test_prefill_of_several_tokens_matches_teacher_forcing(tiny, n):
    cfg, params = tiny
    tokens = jax.random.randint(jax.random.key(3), (2, n), 0, cfg.vocab_size)
    labels = jnp.array([1, 1])
    tf, _ = Transformer(cfg).apply({"params": params}, tokens, labels)
    pre, _ = Transformer(cfg).apply({"params": params}, tokens, labels, cache=init_cache(cfg, 2))
    np.testing.assert_allclose(pre, tf, atol=1e-5)


@pytest.mark.parametrize("t", [0, 5, 14])
def test_causality(tiny, t):
    cfg, params = tiny
    tokens = jax.random.randint(jax.random.key(4), (1, cfg.seq_len - 1), 0, cfg.vocab_size)
    changed = tokens.at[0, t].set((tokens[0, t] + 1) % cfg.vocab_size)
    labels = jnp.array([2])
    a, _ = Transformer(cfg).apply({"params": params}, tokens, labels)
    b, _ = Transformer(cfg).apply({"params": params}, changed, labels)
    pos = cfg.cls_token_num + t  # sequence position of token t
    np.testing.assert_array_equal(a[:, :pos], b[:, :pos])
    assert float(jnp.abs(a[:, pos:] - b[:, pos:]).max()) > 1e-4


def test_bidirectional_sees_the_future(tiny):
    cfg, params = tiny
    cfg = cfg.replace(causal=False)
    tokens = jax.random.randint(jax.random.key(5), (1, cfg.seq_len), 0, cfg.vocab_size)
    changed = tokens.at[0, -1].set((tokens[0, -1] + 1) % cfg.vocab_size)
    a, _ = Transformer(cfg).apply({"params": params}, tokens, jnp.array([0]))
    b, _ = Transformer(cfg).apply({"params": params}, changed, jnp.array([0]))
    assert float(jnp.abs(a[:, 0] - b[:, 0]).max()) > 1e-4


def test_class_label_changes_logits(tiny):
    cfg, params = tiny
    tokens = jnp.zeros((2, 4), jnp.int32)
    out, _ = Transformer(cfg).apply({"params": params}, tokens, jnp.array([0, 1]))
    assert float(jnp.abs(out[0] - out[1]).max()) > 1e-4


def test_rope_2d_table_layout():
    cfg, _ = make_test_model(seq_len=16, dim=64, num_heads=4)
    table = np.asarray(rope_table(cfg))  # [1 + 16, 8, 2]
    assert table.shape == (17, 8, 2)
    np.testing.assert_array_equal(table[0], 0)  # class token rows are zero (LlamaGen)
    n, row, col = 6, 1, 2  # token 6 sits at row 1, col 2 of the 4x4 grid
    freqs = 10000.0 ** (-np.arange(4) * 2 / 8)
    np.testing.assert_allclose(table[1 + n, :4, 0], np.cos(row * freqs), atol=1e-6)
    np.testing.assert_allclose(table[1 + n, 4:, 1], np.sin(col * freqs), atol=1e-6)


def test_parameters_carry_logical_axis_names(tiny):
    cfg, _ = tiny
    _, names = init_params(cfg, jax.random.key(0))
    assert tuple(names["tok_embeddings"]) == ("vocab", "embed")
    assert tuple(names["layers_0"]["attention"]["wq"]) == ("embed", "heads", "head_dim")
    assert tuple(names["layers_0"]["attention"]["wk"]) == ("embed", "kv_heads", "head_dim")
    assert tuple(names["layers_1"]["feed_forward"]["w2"]) == ("mlp", "embed")
    assert tuple(names["output"]) == ("embed", "vocab")


@pytest.mark.parametrize("bad, match", [({"dim": 30}, "num_heads"), ({"num_kv_heads": 3}, "num_kv_heads"),
                                         ({"seq_len": 15}, "square"), ({"rope": "3d"}, "rope"),
                                         ({"attn_dropout": 0.1}, "attn_dropout")])
def test_bad_model_config_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        make_test_model(**bad)
