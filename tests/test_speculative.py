"""Speculative decoding: greedy equals plain greedy, a perfect draft is always accepted, and samples follow
the target's exact distribution (a chi-square test that does catch a wrong sampler)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ar_jax.decode import processors, sampling, speculative
from ar_jax.models.transformer import Transformer
from tests.helpers import make_test_model

scipy_stats = pytest.importorskip("scipy.stats")


def perturb(params, scale, seed=5):
    """A draft that mostly, not always, agrees with the target: each leaf + scale * its std * noise."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * (jnp.std(x) + 1e-3) * jax.random.normal(k, x.shape)
                                     for x, k in zip(leaves, keys)])


def sharpen(params, factor=20.0):
    """Scale up embeddings and attention so each distribution depends on the tokens before it (a cache
    or position bug then changes the outputs; at the factory's init the context barely matters)."""
    attention = {k: v * factor for k, v in params["layers_0"]["attention"].items()}
    return {**params, "tok_embeddings": params["tok_embeddings"] * factor,
            "layers_0": {**params["layers_0"], "attention": attention}}


@pytest.fixture(scope="module")
def target():
    cfg, params = make_test_model(dim=16, num_layers=1, num_heads=2, mlp_dim=24, seq_len=9, vocab_size=7)
    return cfg, sharpen(params)


@pytest.fixture(scope="module")
def micro():
    """vocab 4, 4 tokens: the exact joint of the first two tokens is a 4 x 4 table (flattened to fill it)."""
    cfg, params = make_test_model(dim=16, num_layers=1, num_heads=2, mlp_dim=24, seq_len=4, vocab_size=4, rope="1d")
    return cfg, {**sharpen(params), "output": params["output"] * 0.4}


def test_greedy_equals_plain_greedy(target):
    cfg, params = target
    labels, scale = np.array([0, 1, 2]), processors.Linear(1.0, 3.0)
    want = sampling.generate(params, cfg, labels, jax.random.key(0), greedy=True, cfg_scale=scale)
    got, stats = speculative.generate(params, cfg, perturb(params, 0.1), cfg, labels, jax.random.key(1), k=3,
                                      greedy=True, cfg_scale=scale)
    np.testing.assert_array_equal(got, want)
    assert 0 < int(stats["accepted"]) < int(stats["proposed"])  # both paths ran: drafts kept and rejected


def test_draft_equal_to_target_is_always_accepted(target):
    cfg, params = target
    toks, stats = speculative.generate(params, cfg, params, cfg, np.array([0, 1, 2]), jax.random.key(2), k=5,
                                       temperature=0.8, cfg_scale=processors.Interval(2.0, 0, 5))
    assert int(stats["proposed"]) == 3 * (cfg.seq_len - 2)  # 3 rows, rounds of 1 + 5 and 1 + 2 tokens (slid back)
    assert int(stats["accepted"]) == int(stats["proposed"])
    assert int(stats["rounds"]) == 2
    assert toks.shape == (3, cfg.seq_len) and 0 <= int(toks.min()) and int(toks.max()) < cfg.vocab_size


def exact_first_two(cfg, params, label, cfg_scale=1.0, temperature=1.0, top_k=0):
    """The target's joint distribution `[V, V]` of tokens 0 and 1, by enumerating token 0 (numpy)."""
    V, C = cfg.vocab_size, cfg.cls_token_num
    first = np.arange(V, dtype=np.int32)[:, None]
    model = Transformer(cfg)
    logits = lambda lab: np.asarray(model.apply({"params": params}, first, np.full(V, lab))[0][:, C - 1:C + 1],
                                    np.float64)  # [V (token 0), 2 (positions 0, 1), V]
    lg = logits(label)
    if cfg_scale != 1.0:
        s = np.array([cfg_scale(jnp.int32(p), cfg.seq_len) for p in range(2)], np.float64)[None, :, None]
        unc = logits(cfg.null_label)
        lg = unc + s * (lg - unc)
    lg = lg / temperature
    if top_k:
        lg = np.where(lg < np.sort(lg, -1)[..., -top_k, None], -np.inf, lg)
    p = np.exp(lg - lg.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return p[0, 0][:, None] * p[:, 1]


def chi2_pvalue(samples, joint):
    """Pearson's test of samples `[N, 2]` against `joint [V, V]`; cells expecting < 5 are pooled, and
    a sample in a cell of probability 0 rejects outright."""
    V, N = joint.shape[0], len(samples)
    counts = np.bincount(samples[:, 0] * V + samples[:, 1], minlength=V * V)
    expected = joint.ravel() * N
    if counts[expected == 0].any():  # a sample the target gives probability 0
        return 0.0
    small, big = (expected > 0) & (expected < 5), expected >= 5
    obs, exp = counts[big], expected[big]
    if small.any():
        obs, exp = np.append(obs, counts[small].sum()), np.append(exp, expected[small].sum())
    return scipy_stats.chisquare(obs, exp).pvalue


def test_samples_follow_the_target_distribution(micro):
    """A smaller draft with guidance, temperature and top-k: it is often wrong, so token 1 comes from the
    first round's acceptances, its residual draws, or the loop's next round."""
    cfg, params = micro
    dcfg, dparams = make_test_model(dim=8, num_layers=1, num_heads=2, mlp_dim=16, seq_len=4, vocab_size=4, rope="1d")
    label, settings = 0, dict(temperature=1.2, top_k=3, cfg_scale=processors.Linear(2.0, 1.0))
    joint = exact_first_two(cfg, params, label, **settings)
    run = lambda key: speculative.generate(params, cfg, dparams, dcfg, [label, label], key, k=2, **settings)
    toks, stats = jax.vmap(run)(jax.random.split(jax.random.key(0), 4000))  # 4000 runs of batch 2
    rate = stats["accepted"].sum() / stats["proposed"].sum()
    assert 0.1 < rate < 0.9, rate  # the draft is wrong often enough for the residual draws to matter
    assert chi2_pvalue(np.asarray(toks)[..., :2].reshape(-1, 2), joint) > 1e-3
    # the same test rejects sampling from the draft alone
    wrong = sampling.generate(dparams, dcfg, np.full(8000, label), jax.random.key(1), **settings)
    assert chi2_pvalue(np.asarray(wrong)[:, :2], joint) < 1e-3


@pytest.mark.parametrize("change, kwargs, match", [
    ({}, {"k": 0}, "k=0"),
    ({}, {"k": 9}, "k=9"),
    ({}, {"k": 2.5}, "k=2.5"),
    ({"vocab_size": 5}, {}, "vocab_size: target has 7, draft has 5"),
    ({"seq_len": 16}, {}, "seq_len: target has 9, draft has 16"),
    ({"num_classes": 4}, {}, "num_classes: target has 3, draft has 4"),
    ({}, {"temperature": 0.0}, "temperature=0.0"),
    ({}, {"labels": [3]}, "label 3"),
])
def test_bad_arguments_raise_before_compiling(target, change, kwargs, match):
    cfg, params = target
    kwargs = {"labels": [0], **kwargs}
    before = speculative._speculate._cache_size()
    with pytest.raises(ValueError, match=match):
        speculative.generate(params, cfg, params, cfg.replace(**change), kwargs.pop("labels"), jax.random.key(0),
                             **kwargs)
    assert speculative._speculate._cache_size() == before
