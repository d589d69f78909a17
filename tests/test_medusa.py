"""Medusa decoding: greedy equals plain greedy, rows advance alone, samples follow the model's exact distribution (the
chi-square test of test_speculative), and bad heads or settings are refused before compiling."""

import jax
import numpy as np
import pytest

from ar_jax.decode import medusa as medusa_decode
from ar_jax.decode import processors, sampling
from ar_jax.models import medusa
from tests.helpers import make_test_model, make_text_model
from tests.test_speculative import chi2_pvalue, exact_first_two, sharpen


def random_heads(cfg, params, K, scale=0.5, seed=7, sequential=True):
    """Heads that propose something between the model's next-token guess and noise."""
    heads = medusa.init_heads(cfg, params, K, sequential)
    kw, ko, ke = jax.random.split(jax.random.key(seed), 3)
    heads = {**heads, "v": scale * jax.random.normal(kw, heads["v"].shape) / np.sqrt(heads["v"].shape[1]),
             "output": heads["output"] + scale * jax.random.normal(ko, heads["output"].shape)}
    if sequential:
        heads["embed"] = scale * jax.random.normal(ke, heads["embed"].shape) / np.sqrt(cfg.dim)
    return heads


@pytest.fixture(scope="module")
def target():
    cfg, params = make_test_model(dim=16, num_layers=1, num_heads=2, mlp_dim=24, seq_len=16, vocab_size=7)
    return cfg, sharpen(params)


def test_init_heads_start_as_the_output_head(target):
    cfg, params = target
    heads = medusa.init_heads(cfg, params, 3)
    hidden = jax.random.normal(jax.random.key(0), (2, 5, cfg.dim))
    prev = jax.random.randint(jax.random.key(1), (2, 5, 3), 0, cfg.vocab_size)
    want = np.repeat((hidden @ params["output"])[:, :, None], 3, 2)
    np.testing.assert_allclose(medusa.head_logits(heads, hidden, prev), want, rtol=1e-5, atol=1e-5)
    # a sequential head reads the token before its own; head_step is one head of head_logits
    heads = random_heads(cfg, params, 3)
    full = medusa.head_logits(heads, hidden, prev)
    assert not np.allclose(full, medusa.head_logits(heads, hidden, (prev + 1) % cfg.vocab_size))
    np.testing.assert_allclose(medusa.head_step(heads, 2, hidden[:, 0], prev[:, 0, 2]), full[:, 0, 2], rtol=1e-5,
                               atol=1e-5)


def test_greedy_equals_plain_greedy_and_rows_advance_alone(target):
    cfg, params = target
    heads, labels, scale = random_heads(cfg, params, 3, 0.1), np.array([0, 1, 2]), processors.Linear(1.0, 3.0)
    want = sampling.generate(params, cfg, labels, jax.random.key(0), greedy=True, cfg_scale=scale)
    run = lambda lab: medusa_decode.generate(params, cfg, heads, lab, jax.random.key(1), greedy=True, cfg_scale=scale)
    got, stats = run(labels)
    np.testing.assert_array_equal(got, want)
    assert 0 < int(stats["accepted"]) < int(stats["proposed"])  # proposals kept and rejected
    alone = [run(labels[b:b + 1])[1] for b in range(3)]
    accepted = [int(s["accepted"]) for s in alone]
    assert len(set(accepted)) > 1, accepted  # rows accept different lengths, each at its own position
    assert int(stats["accepted"]) == sum(accepted)
    assert int(stats["rounds"]) == max(int(s["rounds"]) for s in alone)
    # a round keeps 1 + accepted tokens of a row: T - accepted rounds for it (plain decoding: T - 1 after the prefill)
    assert int(stats["rounds"]) == cfg.seq_len - min(accepted)
    assert int(stats["row_rounds"]) == 3 * cfg.seq_len - sum(accepted)


def test_text_prompts_greedy_equals_plain():
    cfg, params = make_text_model(seq_len=9, vocab_size=7, dim=16, num_layers=1, num_heads=2, mlp_dim=24,
                                  image_positions="learned")
    cond = np.array([[0, 0, 0, 3, 4, 5], [0, 7, 8, 9, 1, 2]], np.int32)
    want = sampling.generate(params, cfg, cond, jax.random.key(0), greedy=True, cfg_scale=2.0)
    got, _ = medusa_decode.generate(params, cfg, random_heads(cfg, params, 4), cond, jax.random.key(1), greedy=True,
                                    cfg_scale=2.0)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("proposal, sequential", [("sample", True), ("argmax", True), ("sample", False)])
def test_samples_follow_the_model_distribution(proposal, sequential):
    """Token 1 is head 1's proposal, accepted or replaced by a residual draw: its joint with token 0 must be the
    model's, under guidance, temperature and top-k."""
    cfg, params = make_test_model(dim=16, num_layers=1, num_heads=2, mlp_dim=24, seq_len=4, vocab_size=4, rope="1d")
    params = {**sharpen(params), "output": params["output"] * 0.4}
    heads = random_heads(cfg, params, 2, scale=1.0, sequential=sequential)
    label, settings = 0, dict(temperature=1.2, top_k=3, cfg_scale=processors.Linear(2.0, 1.0))
    joint = exact_first_two(cfg, params, label, **settings)
    run = lambda key: medusa_decode.generate(params, cfg, heads, [label, label], key, proposal=proposal, **settings)
    toks, stats = jax.vmap(run)(jax.random.split(jax.random.key(0), 4000))
    rate = stats["accepted"].sum() / stats["proposed"].sum()
    assert 0.05 < rate < 0.9, rate  # the heads are wrong often enough for the residual draws to matter
    assert chi2_pvalue(np.asarray(toks)[..., :2].reshape(-1, 2), joint) > 1e-3
    # keeping every proposal (no verification) is caught by the same test
    first = np.asarray(toks)[..., 0].reshape(-1)
    h = _prefill_hidden(cfg, params, label)
    q1 = processors.apply(processors.warpers(np.float32(1.2), top_k=3), processors.guide(
        jax.vmap(lambda t: medusa.head_step(heads, 0, h, jax.numpy.full(2, t)), out_axes=1)(first), 2.0)[0],
        processors.Context(1, cfg.seq_len))  # [N, V]: head 1's proposal after each first token
    wrong_second = jax.random.categorical(jax.random.key(3), q1)
    assert chi2_pvalue(np.stack([first, np.asarray(wrong_second)], 1), joint) < 1e-3


def _prefill_hidden(cfg, params, label):
    from ar_jax.models.transformer import Transformer

    (_, hidden), _ = Transformer(cfg).apply({"params": params}, None, np.array([label, cfg.null_label]),
                                            heads="hidden", start=0)
    return hidden[:, -1]  # [2 (cond, uncond), dim]


@pytest.mark.parametrize("heads, kwargs, match", [
    ("wrong_vocab", {}, "heads must be Medusa heads"),
    ("ok", {"temperature": 0.0}, "temperature=0.0"),
    ("ok", {"labels": [3]}, "label 3"),
    ("ok", {"proposal": "tree"}, "proposal='tree'"),
])
def test_bad_arguments_raise_before_compiling(target, heads, kwargs, match):
    cfg, params = target
    good = medusa.init_heads(cfg, params, 2)
    heads = good if heads == "ok" else {**good, "output": good["output"][..., :5]}
    kwargs = {"labels": [0], **kwargs}
    before = medusa_decode._medusa._cache_size()
    with pytest.raises(ValueError, match=match):
        medusa_decode.generate(params, cfg, heads, kwargs.pop("labels"), jax.random.key(0), **kwargs)
    assert medusa_decode._medusa._cache_size() == before


def test_init_heads_refuses_a_bad_count(target):
    cfg, params = target
    with pytest.raises(ValueError, match="num_heads=0"):
        medusa.init_heads(cfg, params, 0)


def test_every_position_matches_plain_sampling():
    """Past the first round too: each position's token distribution under Medusa equals plain sampling's (a
    two-sample chi-square per position, 4000 sequences each, CFG 3, temperature 0.8, top-k 3)."""
    from scipy.stats import chi2_contingency

    cfg, params = make_test_model(dim=16, num_layers=1, num_heads=2, mlp_dim=24, seq_len=9, vocab_size=4, rope="1d")
    params = {**sharpen(params), "output": params["output"] * 0.4}
    heads = random_heads(cfg, params, 3, scale=1.0)
    settings = dict(temperature=0.8, top_k=3, cfg_scale=3.0)
    n = 4000
    plain = jax.vmap(lambda k: sampling.generate(params, cfg, np.array([0, 0]), k, **settings))(
        jax.random.split(jax.random.key(0), n))
    fast = jax.vmap(lambda k: medusa_decode.generate(params, cfg, heads, np.array([0, 0]), k, **settings)[0])(
        jax.random.split(jax.random.key(1), n))
    plain, fast = (np.asarray(x).reshape(-1, cfg.seq_len) for x in (plain, fast))
    for pos in range(cfg.seq_len):
        table = np.array([np.bincount(a[:, pos], minlength=cfg.vocab_size) for a in (plain, fast)])
        table = table[:, table.sum(0) > 0]
        assert chi2_contingency(table)[1] > 1e-3, pos
    # the same test tells apart a sampler that drops top-k (another distribution)
    other = jax.vmap(lambda k: sampling.generate(params, cfg, np.array([0, 0]), k, temperature=0.8, cfg_scale=3.0))(
        jax.random.split(jax.random.key(2), n))
    other = np.asarray(other).reshape(-1, cfg.seq_len)
    assert min(chi2_contingency(np.array([np.bincount(a[:, pos], minlength=cfg.vocab_size) for a in (plain, other)])
                                + 1)[1] for pos in range(cfg.seq_len)) < 1e-3
