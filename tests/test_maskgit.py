"""MaskGIT: the cosine masking of training, the reveal schedule of decoding, inpainting, and the run end to end."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ar_jax
from ar_jax import decode
from ar_jax.config import load_config_file
from ar_jax.data.sources import get_dataset
from ar_jax.decode import maskgit as maskgit_decode
from ar_jax.models import maskgit
from ar_jax.training import trainer
from ar_jax.training.metrics import read_metrics
from tests.helpers import make_maskgit


@pytest.fixture(scope="module")
def tiny():
    return make_maskgit()


def expected_masked(m: int, steps: int) -> list[int]:
    """The schedule written out independently: floor(M cos(pi/2 (t+1)/steps)), revealing >= 1 per step."""
    return [max(0, min(math.floor(m * math.cos(math.pi / 2 * (t + 1) / steps)), m - t - 1)) for t in range(steps)]


def check_history(tokens, hist, given, known, mask_id):
    """Revealed/given tokens never change, masks only shrink, and the final tokens are the last step's."""
    toks, masks = (np.asarray(h) for h in hist)
    prev_tokens, prev_mask = np.where(known, given, mask_id), ~known
    for t in range(toks.shape[0]):
        assert not (masks[t] & ~prev_mask).any(), f"step {t} re-masked a revealed token"
        fixed = ~prev_mask
        np.testing.assert_array_equal(toks[t][fixed], prev_tokens[fixed])
        assert (toks[t][~masks[t]] != mask_id).all() and (toks[t][masks[t]] == mask_id).all()
        prev_tokens, prev_mask = toks[t], masks[t]
    assert not masks[-1].any()
    np.testing.assert_array_equal(np.asarray(tokens), toks[-1])


@pytest.mark.parametrize("steps,settings", [
    (8, {}), (16, {"greedy": True, "cfg_scale": 2.0, "choice_temperature": 0.0})])
def test_each_step_reveals_exactly_the_scheduled_count(tiny, steps, settings):
    cfg, params = tiny
    tokens, hist = decode.generate(params, cfg, [0, 1, 2], jax.random.key(3), steps=steps, return_history=True,
                                   **settings)
    masks = np.asarray(hist[1])
    assert masks.shape == (steps, 3, 16)
    assert [int(c) for c in masks[:, 0].sum(-1)] == expected_masked(16, steps)
    assert (masks.sum(-1) == masks[:, :1].sum(-1)).all()
    assert tokens.shape == (3, 16) and int(tokens.min()) >= 0 and int(tokens.max()) < cfg.vocab_size
    check_history(tokens, hist, np.zeros((3, 16), int), np.zeros((3, 16), bool), cfg.mask_id)


def test_inpainting_keeps_the_given_tokens_and_schedules_the_rest(tiny):
    cfg, params = tiny
    rng = np.random.default_rng(0)
    given = rng.integers(0, cfg.vocab_size, (3, 16))
    known = np.zeros((3, 16), bool)
    known[0, rng.choice(16, 5, replace=False)] = True
    known[1, :12] = True
    known[2] = True
    tokens, hist = decode.generate(params, cfg, [2, 0, 1], jax.random.key(1), steps=8, given=given, known=known,
                                return_history=True)
    masks = np.asarray(hist[1])
    for row in range(3):
        assert [int(c) for c in masks[:, row].sum(-1)] == expected_masked(int((~known[row]).sum()), 8)
    check_history(tokens, hist, given, known, cfg.mask_id)
    np.testing.assert_array_equal(np.asarray(tokens)[known], given[known])
    completed = decode.generate(params, cfg, [2, 0, 1], jax.random.key(1), steps=8, prefix=given[:, :7],
                                return_history=True)[0]
    np.testing.assert_array_equal(np.asarray(completed)[:, :7], given[:, :7])


def test_training_masks_follow_the_cosine_schedule():
    n, T = 20000, 16
    mask = np.asarray(maskgit.training_mask(jax.random.key(0), n, T))
    counts = mask.sum(1)
    assert counts.min() >= 1
    k = np.arange(1, T + 1)
    cosine_cdf = 1 - 2 / np.pi * np.arccos(k / T)  # P(max(1, ceil(cos(pi r / 2) T)) <= k), r ~ U(0, 1)
    linear_cdf = k / T  # a wrong schedule, ceil((1 - r) T): the test can tell it apart
    empirical = np.array([(counts <= j).mean() for j in k])
    assert np.abs(empirical - cosine_cdf).max() < 0.02
    assert np.abs(linear_cdf - cosine_cdf).max() > 0.1
    per_position = mask.mean(0)  # uniform over positions
    assert np.abs(per_position - counts.mean() / T).max() < 0.02


def test_training_loss_is_on_masked_tokens_and_eval_nll_is_deterministic(tiny):
    cfg, params = tiny
    tokens = jax.random.randint(jax.random.key(2), (4, 16), 0, cfg.vocab_size)
    labels = jnp.array([0, 1, 2, 3])
    rng = jax.random.key(5)
    nll = np.asarray(jax.jit(cfg.token_nll)(params, tokens, labels, rng))
    mask_rng, drop_rng = jax.random.split(rng)
    mask = np.asarray(maskgit.training_mask(mask_rng, 4, 16))
    assert (nll[~mask] == 0).all() and (nll[mask] > 0).all()
    plain = np.asarray(jax.jit(cfg._masked_nll)(params, tokens, labels, jnp.asarray(mask), drop_rng))
    np.testing.assert_allclose(nll.mean(), plain[mask].mean(), rtol=1e-5)
    evaluate = jax.jit(cfg.token_nll)
    ev = np.asarray(evaluate(params, tokens, labels))
    np.testing.assert_array_equal(ev, np.asarray(evaluate(params, tokens, labels)))
    np.testing.assert_allclose(ev[::-1], np.asarray(evaluate(params, tokens[::-1], labels[::-1])), rtol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    ({"steps": 0}, "steps=0"), ({"steps": 17}, "steps=17"), ({"steps": 2.5}, "steps=2.5"),
    ({"choice_temperature": -1.0}, "choice_temperature=-1.0"), ({"repetition_penalty": 1.2}, "repetition_penalty"),
    ({"temperature": 0.0}, "temperature=0.0"), ({"labels": [3]}, "label 3"),
    ({"given": np.zeros((1, 16), int)}, "both given"),
    ({"given": np.zeros((1, 9), int), "known": np.ones((1, 9), bool)}, r"\[B=1, seq_len=16\]"),
    ({"given": np.full((1, 16), 12), "known": np.ones((1, 16), bool)}, "vocab_size=12"),
])
def test_bad_settings_raise_before_compiling(tiny, kwargs, match):
    cfg, params = tiny
    kwargs = {"labels": [0], **kwargs}
    before = maskgit_decode._decode._cache_size()
    with pytest.raises(ValueError, match=match):
        decode.generate(params, cfg, kwargs.pop("labels"), jax.random.key(0), **kwargs)
    assert maskgit_decode._decode._cache_size() == before


def test_smoke_run_lowers_the_loss_loads_samples_and_inpaints(tmp_path):
    config = load_config_file("configs/digits_maskgit.py:smoke")
    config.unlock()
    config.num_train_steps, config.log_every, config.eval_every, config.checkpoint_every = 16, 4, 16, 16
    config.optimizer.learning_rate, config.optimizer.warmup_steps = 3e-3, 2
    config.samples_per_class, config.sampling.steps = 1, 4
    config.lock()
    trainer.train_and_evaluate(config, tmp_path)
    metrics = read_metrics(tmp_path)
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert losses[-1] < losses[0] - 0.3, losses
    assert any("test_masked_bits_per_token" in m for m in metrics)
    assert not any("bits_per_dim" in key for m in metrics for key in m)
    pipe = ar_jax.load(tmp_path)
    labels = np.arange(10)  # the batch of the final sample grid: no new compilation
    images = pipe.sample(labels, seed=1)
    assert images.shape == (10, 8, 8, 1) and images.dtype == np.uint8
    known = np.zeros((10, 8, 8), bool)
    known[:, :, :3] = True
    np.testing.assert_array_equal(pipe.inpaint(images, known, labels, seed=2)[:, :, :3], images[:, :, :3])
    test = get_dataset(config.data)
    mbt = pipe.masked_bits_per_token(test.test_images[:256], test.test_labels[:256])  # the trainer's eval batch
    assert mbt.shape == (256,) and 0 < mbt.mean() < math.log2(17)
    with pytest.raises(ValueError, match="no exact likelihood"):
        pipe.bits_per_dim(images, labels)
    with pytest.raises(ValueError, match="unknown sampling setting"):
        pipe.sample([0], top_a=3)
