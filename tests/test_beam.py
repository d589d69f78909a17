"""Beam search: width 1 is greedy, scores are true log-probs, wider beams do better, full width is exact."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ar_jax.decode import beam, processors
from ar_jax.decode.sampling import generate, guide
from ar_jax.models.transformer import Transformer
from tests.helpers import make_test_model


@pytest.fixture(scope="module")
def model():
    return make_test_model(dim=16, num_layers=1, num_heads=2, mlp_dim=24, seq_len=9, vocab_size=7)


@pytest.fixture(scope="module")
def micro():
    """vocab 4, 4 tokens: small enough to enumerate all 256 sequences."""
    return make_test_model(dim=16, num_layers=1, num_heads=2, mlp_dim=24, seq_len=4, vocab_size=4, rope="1d")


def log_prob(cfg, params, labels, toks, scale=1.0):
    """Teacher-forced summed log-probability `[N]` of `toks [N, T]`, guided by a number or a schedule."""
    model = Transformer(cfg)
    logits, _ = model.apply({"params": params}, toks[:, :-1], labels)
    logits = logits[:, cfg.cls_token_num - 1:]
    if scale != 1.0:
        if not isinstance(scale, float):
            scale = jnp.array([scale(jnp.int32(p), cfg.seq_len) for p in range(cfg.seq_len)])[:, None]
        unc, _ = model.apply({"params": params}, toks[:, :-1], np.full_like(labels, cfg.null_label))
        logits = guide(jnp.concatenate([logits, unc[:, cfg.cls_token_num - 1:]]), scale)
    logp = jax.nn.log_softmax(logits, -1)
    return jnp.take_along_axis(logp, jnp.asarray(toks)[..., None], -1)[..., 0].sum(-1)


@pytest.mark.parametrize("scale", [1.0, processors.Linear(1.0, 4.0)])
def test_width_one_is_greedy(model, scale):
    cfg, params = model
    labels = np.array([0, 1, 2])
    toks, scores = beam.beam_search(params, cfg, labels, width=1, cfg_scale=scale)
    greedy = generate(params, cfg, labels, jax.random.key(0), greedy=True, cfg_scale=scale)
    np.testing.assert_array_equal(toks[:, 0], greedy)
    np.testing.assert_allclose(scores[:, 0], log_prob(cfg, params, labels, np.asarray(greedy), scale), atol=1e-4)


def test_wider_beams_score_at_least_greedy_and_report_true_log_probs(model):
    cfg, params = model
    labels = np.array([0, 1, 2])
    greedy = np.asarray(generate(params, cfg, labels, jax.random.key(0), greedy=True))
    greedy_lp = log_prob(cfg, params, labels, greedy)
    toks, scores = beam.beam_search(params, cfg, labels, width=4)
    best = np.asarray(toks[:, 0])
    np.testing.assert_allclose(scores[:, 0], log_prob(cfg, params, labels, best), atol=1e-4)
    assert (np.diff(np.asarray(scores), axis=1) <= 0).all()  # best first
    assert (scores[:, 0] >= greedy_lp - 1e-5).all()
    assert (scores[:, 0] > greedy_lp + 1e-3).any()  # and on this model greedy is not optimal
    for w in range(4):  # every beam's score is its own sequence's log-prob, and beams are distinct
        np.testing.assert_allclose(scores[:, w], log_prob(cfg, params, labels, np.asarray(toks[:, w])), atol=1e-4)
    assert len({tuple(t) for t in np.asarray(toks[0])}) == 4


def test_full_width_is_exact(micro):
    cfg, params = micro
    V, T = cfg.vocab_size, cfg.seq_len
    every = np.array(list(itertools.product(range(V), repeat=T)), np.int32)  # [V^T, T]
    scale = 2.0
    for label in (0, 2):
        lp = log_prob(cfg, params, np.full(len(every), label), every, scale)
        toks, scores = beam.beam_search(params, cfg, [label], width=V ** (T - 1), cfg_scale=scale)
        np.testing.assert_array_equal(toks[0, 0], every[int(jnp.argmax(lp))])
        np.testing.assert_allclose(scores[0, :5], jnp.sort(lp)[::-1][:5], atol=1e-4)


@pytest.mark.parametrize("kwargs, match", [
    ({"width": 0}, "width=0"),
    ({"width": 1.5}, "width=1.5"),
    ({"labels": [5]}, "label 5"),
    ({"cfg_scale": float("nan")}, "cfg_scale=nan"),
])
def test_bad_arguments_raise_before_compiling(model, kwargs, match):
    cfg, params = model
    kwargs = {"labels": [0], **kwargs}
    before = beam._beam_search._cache_size()
    with pytest.raises(ValueError, match=match):
        beam.beam_search(params, cfg, kwargs.pop("labels"), **kwargs)
    assert beam._beam_search._cache_size() == before
