"""The sampler: greedy/top-k/top-p/CFG behaviour, one trace per shape, fixed seeds, errors before compiling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ar_jax.decode import sampling
from ar_jax.decode.sampling import generate, guide, top_k_filter, top_p_filter
from tests.helpers import make_test_model


def test_top_k_one_equals_greedy(tiny):
    cfg, params = tiny
    labels = np.array([0, 1, 2])
    greedy = generate(params, cfg, labels, jax.random.key(0), greedy=True)
    for seed in range(3):
        np.testing.assert_array_equal(generate(params, cfg, labels, jax.random.key(seed), top_k=1), greedy)


def test_greedy_tokens_are_argmax_of_teacher_forced_logits(tiny):
    cfg, params = tiny
    from ar_jax.models.transformer import Transformer

    labels = np.array([1, 2])
    toks = generate(params, cfg, labels, jax.random.key(0), greedy=True)
    tf, _ = Transformer(cfg).apply({"params": params}, toks[:, :-1], labels)
    np.testing.assert_array_equal(jnp.argmax(tf[:, cfg.cls_token_num - 1:], -1), toks)


def test_top_p_keeps_smallest_set_reaching_p():
    probs = np.array([[0.5, 0.05, 0.3, 0.15]])
    logits = jnp.log(probs)
    kept = lambda p: np.isfinite(np.asarray(top_p_filter(logits, p)))[0]
    np.testing.assert_array_equal(kept(0.5), [True, False, False, False])  # 0.5 reaches 0.5
    np.testing.assert_array_equal(kept(0.6), [True, False, True, False])
    np.testing.assert_array_equal(kept(0.81), [True, False, True, True])
    np.testing.assert_array_equal(kept(1.0), [True, True, True, True])
    np.testing.assert_array_equal(kept(0.01), [True, False, False, False])  # never empty


def test_top_k_filter():
    logits = jnp.array([[1.0, 4.0, 3.0, 2.0]])
    np.testing.assert_array_equal(np.isfinite(top_k_filter(logits, 2))[0], [False, True, True, False])


def test_cfg_formula_and_guided_sampling(tiny):
    c, u = jnp.array([[1.0, 2.0, 0.5]]), jnp.array([[0.5, 3.0, 0.0]])
    np.testing.assert_allclose(guide(jnp.concatenate([c, u]), 3.0), u + 3.0 * (c - u))
    cfg, params = tiny
    labels = np.array([0, 2])
    toks, used = generate(params, cfg, labels, jax.random.key(0), greedy=True, cfg_scale=3.0, return_logits=True)
    # Recompute guided logits by teacher forcing the same tokens under the class and under the null class.
    from ar_jax.models.transformer import Transformer

    model = Transformer(cfg)
    cond, _ = model.apply({"params": params}, toks[:, :-1], labels)
    unc, _ = model.apply({"params": params}, toks[:, :-1], np.full(2, cfg.null_label))
    np.testing.assert_allclose(used, unc + 3.0 * (cond - unc), atol=1e-5)
    np.testing.assert_array_equal(toks, jnp.argmax(used, -1))


def test_completion_keeps_the_prefix(tiny):
    cfg, params = tiny
    prefix = np.array([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]])
    toks = generate(params, cfg, np.array([0, 1]), jax.random.key(1), prefix=prefix)
    np.testing.assert_array_equal(toks[:, :5], prefix)
    assert toks.shape == (2, cfg.seq_len)


def test_fixed_seed_is_reproducible_and_seeds_differ(tiny):
    cfg, params = tiny
    labels = np.arange(3).repeat(4)
    a = generate(params, cfg, labels, jax.random.key(7), temperature=1.5)
    b = generate(params, cfg, labels, jax.random.key(7), temperature=1.5)
    c = generate(params, cfg, labels, jax.random.key(8), temperature=1.5)
    np.testing.assert_array_equal(a, b)
    assert (np.asarray(a) != np.asarray(c)).any()


def test_one_trace_per_shape():
    cfg, params = make_test_model(dim=24, num_heads=2)  # a config no other test compiles
    before = sampling._generate._cache_size()
    for seed, temp, top_p, scale in [(0, 1.0, 0.9, 2.0), (1, 0.7, 0.5, 3.0), (2, 1.3, 0.99, 1.5)]:
        generate(params, cfg, np.array([0, 1]), jax.random.key(seed), temperature=temp, top_p=top_p, cfg_scale=scale)
    assert sampling._generate._cache_size() == before + 1
    generate(params, cfg, np.array([0, 1, 2]), jax.random.key(0), top_p=0.9, cfg_scale=2.0)  # new batch size
    assert sampling._generate._cache_size() == before + 2


@pytest.mark.parametrize("kwargs, match", [
    ({"labels": [0, 3]}, "label 3 is outside"),
    ({"labels": [-1]}, "label -1"),
    ({"labels": [[0]]}, "1-D"),
    ({"labels": [0.5]}, "integers"),
    ({"temperature": 0.0}, "temperature=0.0"),
    ({"temperature": -1.0}, "greedy=True"),
    ({"top_p": 0.0}, "top_p=0.0"),
    ({"top_p": 1.5}, "top_p=1.5"),
    ({"top_k": 14}, "top_k=14"),
    ({"top_k": -1}, "top_k=-1"),
    ({"prefix": np.zeros((1, 16), int)}, "prefix of 16 tokens"),
    ({"prefix": np.full((1, 2), 13)}, "vocab_size=13"),
    ({"prefix": np.zeros((2, 2), int)}, "prefix must be"),
])
def test_bad_arguments_raise_before_compiling(tiny, kwargs, match):
    cfg, params = tiny
    kwargs = {"labels": [0], **kwargs}
    before = sampling._generate._cache_size()
    with pytest.raises(ValueError, match=match):
        generate(params, cfg, kwargs.pop("labels"), jax.random.key(0), **kwargs)
    assert sampling._generate._cache_size() == before


def test_temperature_zero_is_fine_with_greedy(tiny):
    cfg, params = tiny
    a = generate(params, cfg, [1], jax.random.key(0), temperature=0.0, greedy=True)
    np.testing.assert_array_equal(a, generate(params, cfg, [1], jax.random.key(3), greedy=True))


@pytest.mark.parametrize("shape, k", [((4, 1000), 1), ((4, 1000), 137), ((4, 1000), 1000), ((2, 7), 3)])
def test_kth_largest_by_bisection_equals_lax_top_k(shape, k):
    from ar_jax.decode.processors import kth_largest

    x = jax.random.normal(jax.random.key(k), shape) * 7
    x = x.at[0, :3].set(-jnp.inf).at[1, 1].set(x[1, 4]).at[1, 2].set(-0.0).at[1, 3].set(0.0)  # -inf, ties, ±0
    np.testing.assert_array_equal(kth_largest(x, k), jax.lax.top_k(x, k)[0][:, -1:])
