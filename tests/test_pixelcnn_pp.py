"""PixelCNN++: the discretized logistic mixture against brute force, causality (network and R -> G -> B), sampling,
training and loading."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ar_jax
from ar_jax import decode
from ar_jax.models.pixelcnn_pp import PixelCNNPP, PixelCNNPPConfig, conditional_logits, log_marginals
from ar_jax.training import trainer
from ar_jax.training.metrics import read_metrics
from tests.helpers import make_test_pp, smoke_config


@functools.partial(jax.jit, static_argnums=(2, 3))
def mixture_fns(out, tokens, levels, mixtures):
    """`(conditional_logits [N, C, L], log_marginals [N, C])` of mixture parameters `out [N, P]`, jitted once."""
    return conditional_logits(out, tokens, levels, mixtures), log_marginals(out, tokens, levels, mixtures)


def brute_force_joint(out, levels, mixtures, channels):
    """P(pixel = v) `[N, L**C]` over every level combination, in float64 numpy, straight from the definition."""
    out = np.asarray(out, np.float64)
    M, C, L = mixtures, channels, levels
    pi = np.exp(out[:, :M]) / np.exp(out[:, :M]).sum(-1, keepdims=True)
    rest = out[:, M:].reshape(len(out), 2 * C + C * (C - 1) // 2, M)
    mu, log_s, coef = rest[:, :C], np.clip(rest[:, C:2 * C], -7, 7), np.tanh(rest[:, 2 * C:])
    sig = lambda z: 0.5 * (1 + np.tanh(z / 2))
    combos = list(itertools.product(range(L), repeat=C))
    P = np.zeros((len(out), len(combos)))
    for i, v in enumerate(combos):
        x = np.array(v) * 2 / (L - 1) - 1
        p = pi.copy()
        pair = 0
        for c in range(C):
            m = mu[:, c].copy()
            for cp in range(c):
                m += coef[:, pair] * x[cp]
                pair += 1
            s = np.exp(log_s[:, c])
            hi = 1.0 if v[c] == L - 1 else sig((x[c] + 1 / (L - 1) - m) / s)
            lo = 0.0 if v[c] == 0 else sig((x[c] - 1 / (L - 1) - m) / s)
            p = p * (hi - lo)
        P[:, i] = p.sum(-1)
    return P.reshape(len(out), *(L,) * C)


@pytest.mark.parametrize("channels", [1, 3])
def test_mixture_conditionals_sum_to_one_and_match_brute_force(channels):
    L, M, N = 5, 3, 6
    P = 2 * channels + channels * (channels - 1) // 2
    out = 2.0 * jax.random.normal(jax.random.key(0), (N, M * (1 + P)))
    tokens = jax.random.randint(jax.random.key(1), (N, channels), 0, L)
    cond, marg = mixture_fns(out, tokens, L, M)
    probs = np.exp(np.asarray(cond, np.float64))  # [N, C, L]
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    joint = brute_force_joint(out, L, M, channels)
    np.testing.assert_allclose(joint.reshape(N, -1).sum(-1), 1.0, atol=1e-9)
    t = np.asarray(tokens)
    for n in range(N):
        for c in range(channels):
            table = joint[n][tuple(t[n, :c])]  # [L, ...later channels]
            want = table.reshape(L, -1).sum(-1) / table.sum()
            np.testing.assert_allclose(probs[n, c], want, rtol=2e-4, atol=1e-6)
    full = np.asarray(marg)[:, -1]  # log P(whole pixel)
    np.testing.assert_allclose(full, np.log([joint[n][tuple(t[n])] for n in range(N)]), rtol=1e-4)


def test_token_nll_is_the_joint_split_by_channel():
    cfg, params = make_test_pp()
    tokens = jax.random.randint(jax.random.key(2), (2, cfg.seq_len), 0, cfg.vocab_size)
    nll, out, logits = jax.jit(lambda p, t, lab: (cfg.token_nll(p, t, lab), cfg.mixture(p, t, lab),
                                                  cfg.logits(p, t, lab)))(params, tokens, jnp.array([0, 3]))
    assert nll.shape == (2, 48) and nll.dtype == jnp.float32 and (nll > 0).all()
    out = out.reshape(-1, cfg.num_outputs)
    joint = brute_force_joint(out, 5, 3, 3)
    t = np.asarray(tokens).reshape(-1, 3)
    p = np.array([joint[n][tuple(t[n])] for n in range(len(t))])
    ok = p > 1e-12  # float64 brute force loses the rare pixels' mass to round-off
    assert ok.mean() > 0.8
    np.testing.assert_allclose(np.asarray(nll).reshape(-1, 3).sum(-1)[ok], -np.log(p[ok]), rtol=1e-4)
    from_logits = -jnp.take_along_axis(logits, tokens[..., None], -1)[..., 0]
    np.testing.assert_allclose(nll, from_logits, rtol=1e-4, atol=1e-5)


def test_network_output_depends_only_on_earlier_pixels():
    cfg, params = make_test_pp()  # 4x4 pixels, two resolutions
    H, W, C = cfg.token_shape
    proj = jax.random.normal(jax.random.key(1), (cfg.num_outputs,))
    f = lambda x: PixelCNNPP(cfg).apply({"params": params}, x[None], jnp.array([1]))[0] @ proj  # [H, W]
    x = jax.random.uniform(jax.random.key(2), (H, W, C), minval=-1, maxval=1)
    D = np.abs(np.asarray(jax.jit(jax.jacrev(f))(x))).reshape(H * W, H * W, C).sum(-1)
    future = np.triu(np.ones((H * W, H * W), bool))  # the pixel itself and every later one
    assert (D[future] == 0).all(), np.argwhere(D * future)[:5]
    assert (D[~future] > 0).mean() > 0.9  # no blind spot: (nearly) every earlier pixel is seen
    assert (D[-1, :-1] > 0).all()  # the last pixel sees every earlier one


def test_channel_conditionals_follow_r_g_b():
    cfg, params = make_test_pp()
    T, C = cfg.seq_len, 3
    base = jax.random.randint(jax.random.key(3), (T,), 0, cfg.vocab_size)
    changed = jnp.stack([base.at[j].set((base[j] + 2) % cfg.vocab_size) for j in range(T)])  # [T, T]
    lg = jax.jit(cfg.logits)(params, jnp.concatenate([base[None], changed]), jnp.ones(T + 1, jnp.int32))
    D = np.abs(np.asarray(lg[1:] - lg[:1])).max(-1).T  # D[o, j]: change of o's conditional when token j changes
    # Nothing depends on itself or later tokens. Not exactly 0: the random mixture's scales reach e^7 bins, so a
    # last-bit difference between batch rows in the network output shows up as ~1e-4 in a log-probability.
    assert (D[np.triu(np.ones((T, T), bool))] < 1e-3).all(), D[np.triu(np.ones((T, T), bool))].max()
    p = 2 * 4 + 1
    r, g, b = p * C, p * C + 1, p * C + 2
    assert D[g, r] > 1e-2 and D[b, r] > 1e-2 and D[b, g] > 1e-2  # G sees R; B sees R and G
    assert (D[r, :r] > 1e-2).mean() > 0.6  # R sees the earlier pixels


def test_sampler_shape_seed_prefix_and_greedy():
    cfg, params = make_test_pp(token_shape=(2, 2, 3))
    toks = decode.generate(params, cfg, [0, 2], jax.random.key(5), cfg_scale=2.0, temperature=0.8)
    assert toks.shape == (2, 12) and toks.dtype == jnp.int32
    assert 0 <= int(toks.min()) and int(toks.max()) < cfg.vocab_size
    np.testing.assert_array_equal(toks, decode.generate(params, cfg, [0, 2], jax.random.key(5), cfg_scale=2.0,
                                                     temperature=0.8))
    prefix = np.asarray(toks[:, :4])  # ends inside pixel 1
    again = decode.generate(params, cfg, [1, 1], jax.random.key(7), prefix=prefix, cfg_scale=2.0, temperature=0.8)
    np.testing.assert_array_equal(again[:, :4], prefix)
    assert not np.array_equal(again, toks)
    greedy = decode.generate(params, cfg, [1], jax.random.key(0), greedy=True)
    np.testing.assert_array_equal(jnp.argmax(jax.jit(cfg.logits)(params, greedy, jnp.array([1])), -1), greedy)


def test_bad_settings_are_refused():
    cfg, params = make_test_pp(token_shape=(2, 2, 3))
    with pytest.raises(ValueError, match="label 3 is outside"):
        decode.generate(params, cfg, [3], jax.random.key(0))
    with pytest.raises(ValueError, match="num_stages=3"):
        PixelCNNPPConfig(vocab_size=5, token_shape=(6, 6, 3), num_classes=0, num_stages=3).validate()


def test_smoke_training_of_pixelcnn_pp_lowers_loss_and_loads(tmp_path):
    config = smoke_config(num_train_steps=12, log_every=2, eval_every=12, checkpoint_every=12)
    config.unlock()
    config.model = ar_jax.config.load_config_file("configs/digits_pixelcnn_pp.py:smoke").model
    config.optimizer.learning_rate = 1e-2
    config.samples_per_class = 1
    config.lock()
    trainer.train_and_evaluate(config, tmp_path)
    losses = [m["loss"] for m in read_metrics(tmp_path) if "loss" in m]
    assert losses[-1] < losses[0] - 0.2, losses
    pipe = ar_jax.load(tmp_path)
    labels = np.arange(10)  # the trainer's sample grid's batch: its compiled sampler is reused
    images = pipe.sample(labels, seed=1)
    assert images.shape == (10, 8, 8, 1) and images.dtype == np.uint8
    bpd = pipe.bits_per_dim(images, labels)
    assert bpd.shape == (10,) and np.isfinite(bpd).all() and (bpd > 0).all()
