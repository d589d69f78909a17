"""Logits processors: each filter against a reference, schedules, penalties threaded through the sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ar_jax.decode import processors as proc
from ar_jax.decode import sampling
from ar_jax.decode.sampling import generate
from ar_jax.models.transformer import Transformer
from tests.helpers import make_test_model

CTX = proc.Context(jnp.int32(0), 8)


def kept(processor, logits, ctx=CTX):
    return np.isfinite(np.asarray(processor(jnp.asarray(logits, jnp.float32), ctx)))


@pytest.fixture(scope="module")
def small():
    return make_test_model(dim=16, num_layers=1, num_heads=2, mlp_dim=24, seq_len=9, vocab_size=7)


def test_min_p_keeps_tokens_above_fraction_of_max():
    logits = np.log([[0.5, 0.3, 0.15, 0.05]])
    np.testing.assert_array_equal(kept(proc.MinP(0.3), logits)[0], [True, True, True, False])
    np.testing.assert_array_equal(kept(proc.MinP(0.61), logits)[0], [True, False, False, False])
    np.testing.assert_array_equal(kept(proc.MinP(0.0), logits)[0], [True] * 4)


def typical_reference(logits, mass):
    """Meister et al.'s rule, written out in numpy, one row at a time."""
    p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    entropy = -(p * np.log(p)).sum()
    order = np.argsort(np.abs(-np.log(p) - entropy), kind="stable")
    keep, total = np.zeros(len(p), bool), 0.0
    for i in order:
        keep[i] = True
        total += p[i]
        if total >= mass:
            break
    return keep


def test_typical_matches_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20, 9)) * 2
    for mass in (0.2, 0.5, 0.9, 0.99):
        got = kept(proc.Typical(mass), logits)
        want = np.stack([typical_reference(row, mass) for row in logits])
        np.testing.assert_array_equal(got, want)
    # the most likely token is not always typical: a peaked row with a long flat tail
    peaked = np.log([[0.4] + [0.6 / 30] * 30])
    assert not kept(proc.Typical(0.3), peaked)[0, 0]


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    logits = jnp.array([[2.0, -2.0, 2.0, -2.0]])
    ctx = proc.Context(jnp.int32(0), 8, jnp.array([[1, 3, 0, 0]]))
    np.testing.assert_allclose(proc.RepetitionPenalty(2.0)(logits, ctx), [[1.0, -4.0, 2.0, -2.0]])


def test_schedules():
    T = 10
    at = lambda s, pos: float(s(jnp.int32(pos), T))
    assert at(proc.Constant(3.0), 7) == 3.0
    lin = proc.Linear(1.0, 4.0)
    assert (at(lin, 0), at(lin, 3), at(lin, 9)) == (1.0, 2.0, 4.0)
    box = proc.Interval(3.0, 2, 5)
    assert [at(box, p) for p in range(7)] == [1, 1, 3, 3, 3, 1, 1]
    llamagen = proc.Interval.llamagen(4.0, 0)  # LlamaGen's cfg_interval=0: tokens 0 and 1 guided
    assert [at(llamagen, p) for p in range(4)] == [4, 4, 1, 1]
    assert at(proc.Interval.llamagen(4.0, -1), 9) == 4.0


def test_interval_guidance_in_the_sampler(small):
    cfg, params = small
    labels = np.array([0, 2])
    toks, used = generate(params, cfg, labels, jax.random.key(0), greedy=True,
                          cfg_scale=proc.Interval(3.0, 2, 5), return_logits=True)
    model = Transformer(cfg)
    cond, _ = model.apply({"params": params}, toks[:, :-1], labels)
    unc, _ = model.apply({"params": params}, toks[:, :-1], np.full(2, cfg.null_label))
    scale = np.where((np.arange(cfg.seq_len) >= 2) & (np.arange(cfg.seq_len) < 5), 3.0, 1.0)[None, :, None]
    np.testing.assert_allclose(used, unc + scale * (cond - unc), atol=1e-5)
    np.testing.assert_array_equal(toks, jnp.argmax(used, -1))


def test_repetition_penalty_sees_prefix_and_generated_tokens(small):
    cfg, params = small
    labels, prefix, penalty = np.array([1, 2]), np.array([[3, 3], [0, 5]]), 1.7
    toks, used = generate(params, cfg, labels, jax.random.key(0), prefix=prefix, greedy=True,
                          repetition_penalty=penalty, return_logits=True)
    raw, _ = Transformer(cfg).apply({"params": params}, toks[:, :-1], labels)
    raw = np.asarray(raw[:, cfg.cls_token_num + 1:])  # the logits of tokens 2.. (after the prefix)
    toks = np.asarray(toks)
    want = raw.copy()
    for b in range(2):
        for j in range(2, cfg.seq_len):
            seen = np.isin(np.arange(cfg.vocab_size), toks[b, :j])
            row = raw[b, j - 2]
            want[b, j - 2] = np.where(seen, np.where(row > 0, row / penalty, row * penalty), row)
    np.testing.assert_allclose(used, want, atol=1e-5)
    np.testing.assert_array_equal(toks[:, 2:], np.argmax(want, -1))
    plain = generate(params, cfg, labels, jax.random.key(0), prefix=prefix, greedy=True)
    assert (np.asarray(plain) != toks).any()  # the penalty changed the choices


def test_min_p_one_is_greedy(small):
    cfg, params = small
    labels = np.arange(3).repeat(2)
    greedy = generate(params, cfg, labels, jax.random.key(0), greedy=True)
    np.testing.assert_array_equal(generate(params, cfg, labels, jax.random.key(5), min_p=1.0), greedy)


def test_new_values_share_one_compilation(small):
    cfg, params = small
    before = sampling._generate._cache_size()
    for seed, (mp, tp, rp, lo, hi) in enumerate([(0.05, 0.9, 1.2, 1.0, 3.0), (0.2, 0.5, 2.0, 2.0, 1.5)]):
        generate(params, cfg, [0, 1], jax.random.key(seed), min_p=mp, typical_p=tp, repetition_penalty=rp,
                 cfg_scale=proc.Linear(lo, hi))
    assert sampling._generate._cache_size() == before + 1


@pytest.mark.parametrize("kwargs, match", [
    ({"min_p": 1.5}, "min_p=1.5"),
    ({"typical_p": 0.0}, "typical_p=0.0"),
    ({"repetition_penalty": 0.0}, "repetition_penalty=0.0"),
    ({"repetition_penalty": float("inf")}, "repetition_penalty=inf"),
    ({"cfg_scale": proc.Interval(2.0, 5, 5)}, "is empty"),
    ({"cfg_scale": proc.Linear(float("nan"), 2.0)}, "Linear.start=nan"),
    ({"cfg_scale": "2"}, "must be a number or a schedule"),
])
def test_bad_processor_arguments_raise_before_compiling(small, kwargs, match):
    cfg, params = small
    before = sampling._generate._cache_size()
    with pytest.raises(ValueError, match=match):
        generate(params, cfg, [0], jax.random.key(0), **kwargs)
    assert sampling._generate._cache_size() == before
