"""Training recipes: gradient accumulation equals the large batch, EMA follows its formula and survives resume."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ar_jax
from ar_jax.training import trainer
from ar_jax.training.steps import ema_decay_at, loss_and_grads
from tests.helpers import make_test_model, smoke_config


def test_accumulated_gradients_equal_large_batch_gradients():
    cfg, params = make_test_model()
    tokens = jax.random.randint(jax.random.key(0), (8, cfg.seq_len), 0, cfg.vocab_size)
    labels = jnp.arange(8) % 3
    big = loss_and_grads(params, cfg, tokens, labels, None, 1)
    for k in (4,):
        acc = loss_and_grads(params, cfg, tokens, labels, None, k)
        np.testing.assert_allclose(acc[0], big[0], rtol=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), acc[1], big[1])


def test_ema_update_follows_its_formula(tmp_path):
    config = smoke_config(num_train_steps=3, ema_decay=0.5, ema_warmup=False, log_every=1, checkpoint_every=1,
                          **{"model.token_dropout": 0.0, "model.resid_dropout": 0.0, "model.ffn_dropout": 0.0})
    from ar_jax.training.checkpoints import Checkpointer

    state = trainer.train_and_evaluate(config, tmp_path)
    ck = Checkpointer(tmp_path)
    states = [ck.restore(state, step=s) for s in (2, 3)]
    ck.close()
    expect = jax.tree.map(lambda e, p: 0.5 * e + 0.5 * p, states[0].ema_params, states[1].params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), states[1].ema_params, expect)
    assert float(ema_decay_at(jnp.int32(0), 0.999, True)) == pytest.approx(0.1)
    assert float(ema_decay_at(jnp.int32(10**6), 0.999, True)) == pytest.approx(0.999)


def test_ema_survives_resume_and_is_the_default_for_sampling(tmp_path, monkeypatch):
    config = smoke_config(num_train_steps=6, ema_decay=0.9, checkpoint_every=2)
    straight = trainer.train_and_evaluate(config, tmp_path / "a")
    real = trainer.next_batch

    def crash(loader, mesh, step):
        if step == 3:
            raise KeyboardInterrupt
        return real(loader, mesh, step)

    monkeypatch.setattr(trainer, "next_batch", crash)
    with pytest.raises(KeyboardInterrupt):
        trainer.train_and_evaluate(config, tmp_path / "b")
    monkeypatch.setattr(trainer, "next_batch", real)
    resumed = trainer.train_and_evaluate(config, tmp_path / "b")
    jax.tree.map(np.testing.assert_array_equal, resumed.ema_params, straight.ema_params)
    ema, raw = ar_jax.load(tmp_path / "b", weights="latest"), ar_jax.load(tmp_path / "b", weights="raw")
    assert ema.weights == "latest: step 6, EMA weights"
    jax.tree.map(np.testing.assert_array_equal, ema.params, straight.ema_params)
    jax.tree.map(np.testing.assert_array_equal, raw.params, straight.params)
    with pytest.raises(ValueError, match="weights='wrong'"):
        ar_jax.load(tmp_path / "b", weights="wrong")


def test_bad_recipe_values_are_refused():
    with pytest.raises(ValueError, match="grad_accum_steps=3"):
        trainer.check_config(smoke_config(grad_accum_steps=3))
    with pytest.raises(ValueError, match="ema_decay=1.0"):
        trainer.check_config(smoke_config(ema_decay=1.0))


def test_training_with_accumulation_runs(tmp_path):
    state = trainer.train_and_evaluate(smoke_config(grad_accum_steps=4, num_train_steps=2), tmp_path)
    assert int(state.step) == 2
