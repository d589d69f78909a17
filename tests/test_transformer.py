"""The decoder (reference backend): cache path equals teacher forcing, causality, grouped-query attention, RoPE.

The platform backends are checked against it in test_backends.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ar_jax.models.transformer import Transformer, init_cache, init_params, rope_table
from tests.helpers import cached_logits, make_test_model


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


@pytest.mark.parametrize("n", [5, 12])  # within CACHED_QUERY_MAX (8) new positions, and beyond it
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
