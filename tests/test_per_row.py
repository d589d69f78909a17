"""Per-row cache positions: a cached call with one start per row equals the teacher-forced model on every row, stale
entries past a row's start (a rolled-back speculation) included, and speculative decoding advances each row alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ar_jax.decode import processors, sampling, speculative
from ar_jax.models.transformer import Transformer, init_cache
from tests.helpers import make_test_model, make_text_model
from tests.test_speculative import perturb, sharpen


def _cond(cfg, B):
    if cfg.condition == "text":  # left-padded prompts of different lengths: the cache's "valid" entries matter
        return np.array([[0, 0, 0, 3, 4, 5], [0, 7, 8, 9, 1, 2], [0, 0, 0, 0, 0, 11]][:B], np.int32)
    return np.arange(B, dtype=np.int32) % cfg.num_classes


@pytest.mark.parametrize("make, kw", [
    (make_test_model, dict(rope="2d")),
    (make_test_model, dict(rope="1d", image_positions="learned", num_kv_heads=2)),
    (make_text_model, dict(rope="2d", image_positions="sincos")),
])
def test_per_row_start_equals_teacher_forcing_over_stale_entries(make, kw):
    cfg, params = make(**kw)
    params = sharpen(params) if "layers_0" in params else params
    model, B, S, C, T = Transformer(cfg), 3, 3, cfg.prefix_len, cfg.seq_len
    x = jax.random.randint(jax.random.key(3), (B, T), 0, cfg.vocab_size)
    cond = _cond(cfg, B)
    full, _ = model.apply({"params": params}, x[:, :-1], cond)  # [B, C + T - 1, V]
    starts = np.array([2, 9, 5])  # each row's first new image position
    stale = jnp.where(jnp.arange(T)[None] >= starts[:, None], (x + 1 + jnp.arange(B)[:, None]) % cfg.vocab_size, x)
    _, cache = model.apply({"params": params}, stale, cond, start=0, cache=init_cache(cfg, B, C + T + S))
    feed = jnp.stack([x[b, s:s + S] for b, s in enumerate(starts)])
    got, cache = model.apply({"params": params}, feed, None, start=jnp.asarray(C + starts, jnp.int32), cache=cache)
    want = jnp.stack([full[b, C + s:C + s + S] for b, s in enumerate(starts)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # the cache now holds row b's keys of x at C + s_b .. C + s_b + S - 1, and stale ones after
    one, _ = model.apply({"params": params}, feed[:, :1], None, start=jnp.asarray(C + starts, jnp.int32), cache=cache)
    np.testing.assert_allclose(one[:, 0], want[:, 0], rtol=1e-4, atol=1e-4)


def test_one_start_per_row_is_refused_with_a_condition():
    cfg, params = make_test_model()
    with pytest.raises(ValueError, match="one start per row"):
        Transformer(cfg).apply({"params": params}, jnp.zeros((2, 1), jnp.int32), np.array([0, 1]),
                               start=jnp.array([0, 1]), cache=init_cache(cfg, 2))


@pytest.fixture(scope="module")
def target():
    cfg, params = make_test_model(dim=16, num_layers=1, num_heads=2, mlp_dim=24, seq_len=16, vocab_size=7)
    return cfg, sharpen(params)


def test_rows_advance_by_their_own_accepted_lengths(target):
    """Greedy: each row alone and in the batch emit the same tokens, accept the same drafts and need the same rounds;
    the batch's totals are the rows' sums and its rounds the slowest row's (a batch advancing by its minimum would
    accept fewer)."""
    cfg, params = target
    draft, labels = perturb(params, 0.3), np.array([0, 1, 2])
    run = lambda lab: speculative.generate(params, cfg, draft, cfg, lab, jax.random.key(1), k=3, greedy=True,
                                           cfg_scale=2.0)
    toks, stats = run(labels)
    alone = [run(labels[b:b + 1]) for b in range(3)]
    np.testing.assert_array_equal(toks, np.concatenate([t for t, _ in alone]))
    np.testing.assert_array_equal(toks, sampling.generate(params, cfg, labels, jax.random.key(0), greedy=True,
                                                          cfg_scale=2.0))
    accepted = [int(s["accepted"]) for _, s in alone]
    assert len(set(accepted)) > 1, accepted  # the rows do accept different lengths
    assert int(stats["accepted"]) == sum(accepted)
    assert int(stats["proposed"]) == sum(int(s["proposed"]) for _, s in alone)
    assert int(stats["rounds"]) == max(int(s["rounds"]) for _, s in alone)


def test_text_prompts_with_guidance_greedy_equals_plain():
    cfg, params = make_text_model(seq_len=9, vocab_size=7, dim=16, num_layers=1, num_heads=2, mlp_dim=24)
    params = sharpen(params)
    cond, scale = _cond(cfg, 3), processors.Linear(1.0, 3.0)
    want = sampling.generate(params, cfg, cond, jax.random.key(0), greedy=True, cfg_scale=scale)
    got, stats = speculative.generate(params, cfg, perturb(params, 0.2), cfg, cond, jax.random.key(1), k=3,
                                      greedy=True, cfg_scale=scale)
    np.testing.assert_array_equal(got, want)
    assert 0 < int(stats["accepted"]) < int(stats["proposed"])


def test_written_attention_reads_each_rows_own_length():
    """One decoding position over a long cache (the blockwise path) with one length per row equals masked attention."""
    from ar_jax.backends.xla import einsum_attention, written_attention

    B, KV, G, M, D = 3, 2, 2, 256, 8
    q, k, v = (jax.random.normal(jax.random.key(i), s) for i, s in enumerate(
        [(B, 1, KV * G, D), (B, KV, M, D), (B, KV, M, D)]))
    length = jnp.array([5, 130, 256])
    mask = (jnp.arange(M)[None] < length[:, None])[:, None, None]  # [B, 1, 1, M]
    np.testing.assert_allclose(written_attention(q, k, v, length, 0.3), einsum_attention(q, k, v, mask, 0.3),
                               rtol=1e-5, atol=1e-5)
