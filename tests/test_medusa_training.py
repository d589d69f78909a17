"""Medusa heads trained on a frozen run: the smoke config end to end, the load that attaches them, sampling with them
equal to plain greedy sampling, and a bad base run refused."""

import numpy as np
import pytest

import ar_jax
from ar_jax.config import load_config_file
from ar_jax.training import trainer
from ar_jax.training.metrics import read_metrics
from tests.helpers import smoke_config


def medusa_config(base, **overrides):
    config = load_config_file("configs/scenes_t2i_medusa.py:smoke")
    config.unlock()
    config.base_workdir = str(base)
    config.update(overrides)
    config.lock()
    return config


def test_heads_train_on_a_frozen_run_and_sample_with_it(tmp_path):
    base = tmp_path / "base"
    trainer.train_and_evaluate(smoke_config(), base)
    before = sorted(p.name for p in base.rglob("*"))
    trainer.train_and_evaluate(medusa_config(base), tmp_path / "medusa")
    assert sorted(p.name for p in base.rglob("*")) == before  # the base run is only read
    metrics = [m for m in read_metrics(tmp_path / "medusa") if "loss" in m]
    assert [m["step"] for m in metrics] == [2, 4] and all(np.isfinite(m["head2_nll"]) for m in metrics)
    assert all(0 <= m["head1_top1"] <= 1 for m in metrics)

    pipe = ar_jax.load(tmp_path / "medusa")
    assert pipe.medusa["w"].shape[0] == 2 and "Medusa heads: step 4" in pipe.weights
    labels = np.arange(4) % 3
    np.testing.assert_array_equal(pipe.sample_tokens(labels, greedy=True),
                                  pipe.sample_tokens(labels, greedy=True, method="plain"))
    with pytest.raises(ValueError, match="method='medusa'"):
        ar_jax.load(base).sample_tokens(labels, method="medusa")
    # resuming to more steps continues from the checkpoint
    trainer.train_and_evaluate(medusa_config(base, num_train_steps=6), tmp_path / "medusa")
    assert [m["step"] for m in read_metrics(tmp_path / "medusa") if "loss" in m] == [2, 4, 6]


def test_a_base_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(ValueError, match="holds no trained run"):
        trainer.train_and_evaluate(medusa_config(tmp_path / "nothing"), tmp_path / "medusa")
