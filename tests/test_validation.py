"""The validation split and the best checkpoint: disjoint and seeded, lowest kept, restored by load, kept on resume."""

import dataclasses

import jax
import numpy as np
import pytest

import ar_jax
from ar_jax.data.sources import ImageDataset, digits
from ar_jax.data.splits import split_validation, validation_indices
from ar_jax.training import trainer
from ar_jax.training.checkpoints import Checkpointer
from ar_jax.training.metrics import read_metrics
from tests.helpers import smoke_config

# Offsets added to the true validation bits/dim at the 1st, 2nd, ... evaluation, so that the best is the 3rd (step
# 6 with eval_every=2), neither the first nor the latest.
OFFSETS = [0.9, 0.6, 0.0, 0.4, 0.5, 0.7]
REAL_BITS_PER_DIM = trainer.bits_per_dim


@dataclasses.dataclass(frozen=True)
class Captioned(ImageDataset):
    """A dataset with one more per-example field, as a source may add."""

    train_captions: list | None = None
    test_captions: list | None = None


def test_validation_split_is_disjoint_from_training_and_fixed_by_the_seed():
    data = digits()
    n = len(data.train_images)
    ids = Captioned(data.train_images, np.arange(n, dtype=np.int32), data.test_images, data.test_labels, 10,
                    train_captions=[f"image {i}" for i in range(n)])
    rest, val = split_validation(ids, 0.1, seed=0)
    assert len(val["labels"]) == 150 and len(rest.train_labels) == n - 150
    assert not set(val["labels"]) & set(rest.train_labels)  # disjoint ...
    assert sorted([*val["labels"], *rest.train_labels]) == list(range(n))  # ... and together the training set
    np.testing.assert_array_equal(val["images"], data.train_images[val["labels"]])  # every field split alike
    assert val["captions"] == [f"image {i}" for i in val["labels"]]
    assert rest.train_captions == [f"image {i}" for i in rest.train_labels]
    assert rest.test_images is data.test_images and rest.test_captions is None  # the test split is untouched
    again, val_again = split_validation(ids, 0.1, seed=0)
    np.testing.assert_array_equal(val_again["labels"], val["labels"])  # fixed by the seed
    assert set(split_validation(ids, 0.1, seed=1)[1]["labels"]) != set(val["labels"])
    keep, held = validation_indices(n, 0.0, seed=0)
    assert len(held) == 0 and len(keep) == n
    with pytest.raises(ValueError, match=r"validation_fraction=1.5 must be in \[0, 1\)"):
        validation_indices(n, 1.5, seed=0)
    with pytest.raises(ValueError, match=r"validation_fraction=0.001 of 10 training examples holds out 0"):
        validation_indices(10, 0.001, seed=0)


def shifted_validation(monkeypatch):
    """Make the validation bits/dim of the i-th evaluation its true value plus OFFSETS[i] (the test split's as is)."""
    calls = []

    def fake(params, cfg, tokens, labels, dims, **kw):
        out = REAL_BITS_PER_DIM(params, cfg, tokens, labels, dims, **kw)
        if len(tokens) == 150:  # the digits' validation split (10% of 1,500); the test split has 297
            out = out + OFFSETS[len(calls)]
            calls.append(1)
        return out

    monkeypatch.setattr(trainer, "bits_per_dim", fake)
    return calls


def config():
    return smoke_config(num_train_steps=12, eval_every=2, checkpoint_every=5, log_every=1, keep_checkpoints=1)


def steps_on_disk(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_best_checkpoint_has_the_lowest_validation_metric_and_is_what_load_reads(tmp_path, monkeypatch):
    shifted_validation(monkeypatch)
    trainer.train_and_evaluate(config(), tmp_path)
    val = {m["step"]: m["val_bits_per_dim_ema"] for m in read_metrics(tmp_path) if "val_bits_per_dim_ema" in m}
    assert sorted(val) == [2, 4, 6, 8, 10, 12] and min(val, key=val.get) == 6
    ckpt = Checkpointer(tmp_path)
    assert ckpt.best_step() == 6 and ckpt.latest_step() == 12
    assert ckpt.metrics(6)["validation"] == pytest.approx(val[6])
    assert steps_on_disk(tmp_path) == [6, 12]  # the newest (keep_checkpoints=1) and the best
    best = ar_jax.load(tmp_path)  # the default where there is a validation metric
    assert best.weights.startswith("best: step 6 of 12 (val_bits_per_dim_ema") and "EMA" in best.weights
    at_6 = ckpt.restore_params(best.params, step=6, item="ema_params")
    jax.tree.map(np.testing.assert_array_equal, best.params, at_6)
    jax.tree.map(np.testing.assert_array_equal, ar_jax.load(tmp_path, weights="best").params, at_6)
    latest = ar_jax.load(tmp_path, weights="latest")
    assert latest.weights == "latest: step 12, EMA weights"
    jax.tree.map(np.testing.assert_array_equal, latest.params, ckpt.restore_params(at_6, item="ema_params"))
    assert ar_jax.load(tmp_path, weights="raw").weights == "latest: step 12, raw weights"
    assert not np.array_equal(latest.params["output"], best.params["output"])
    ckpt.close()


def test_killed_run_resumes_from_the_latest_and_still_knows_the_best(tmp_path, monkeypatch):
    shifted_validation(monkeypatch)
    straight = trainer.train_and_evaluate(config(), tmp_path / "straight")

    calls = shifted_validation(monkeypatch)
    real = trainer.next_batch

    def crash_at_9(loader, mesh, step):
        if step == 9:
            raise KeyboardInterrupt("simulated kill")
        return real(loader, mesh, step)

    monkeypatch.setattr(trainer, "next_batch", crash_at_9)
    with pytest.raises(KeyboardInterrupt):
        trainer.train_and_evaluate(config(), tmp_path / "resumed")
    assert len(calls) == 4 and steps_on_disk(tmp_path / "resumed") == [6, 9]  # latest (the crash) and best
    monkeypatch.setattr(trainer, "next_batch", real)
    resumed = trainer.train_and_evaluate(config(), tmp_path / "resumed")

    jax.tree.map(np.testing.assert_array_equal, resumed.params, straight.params)
    jax.tree.map(np.testing.assert_array_equal, resumed.opt_state, straight.opt_state)
    strip = lambda ms: [{k: v for k, v in m.items() if k != "steps_per_s"} for m in ms]
    assert strip(read_metrics(tmp_path / "resumed")) == strip(read_metrics(tmp_path / "straight"))
    assert steps_on_disk(tmp_path / "resumed") == steps_on_disk(tmp_path / "straight") == [6, 12]
    assert Checkpointer(tmp_path / "resumed").best_step() == 6
    jax.tree.map(np.testing.assert_array_equal, ar_jax.load(tmp_path / "resumed").params,
                 ar_jax.load(tmp_path / "straight").params)


def test_run_stopped_during_an_evaluation_evaluates_it_on_resume(tmp_path, monkeypatch):
    shifted_validation(monkeypatch)
    trainer.train_and_evaluate(config(), tmp_path / "straight")

    calls = shifted_validation(monkeypatch)
    shifted = trainer.bits_per_dim

    def interrupted_at_6(params, cfg, tokens, labels, dims, **kw):
        if len(tokens) == 150 and len(calls) == 2:  # the validation evaluation of step 6
            raise KeyboardInterrupt("simulated Ctrl-C during the evaluation")
        return shifted(params, cfg, tokens, labels, dims, **kw)

    monkeypatch.setattr(trainer, "bits_per_dim", interrupted_at_6)
    with pytest.raises(KeyboardInterrupt):
        trainer.train_and_evaluate(config(), tmp_path / "resumed")
    ckpt = Checkpointer(tmp_path / "resumed")
    assert ckpt.latest_step() == 6 and ckpt.metrics(6) is None  # saved by the crash, not evaluated
    ckpt.close()
    monkeypatch.setattr(trainer, "bits_per_dim", shifted)
    trainer.train_and_evaluate(config(), tmp_path / "resumed")
    strip = lambda ms: [{k: v for k, v in m.items() if k != "steps_per_s"} for m in ms]
    assert strip(read_metrics(tmp_path / "resumed")) == strip(read_metrics(tmp_path / "straight"))
    assert Checkpointer(tmp_path / "resumed").best_step() == 6
    assert steps_on_disk(tmp_path / "resumed") == [6, 12]


def test_load_weights_choices_and_runs_without_validation(tmp_path):
    trainer.train_and_evaluate(smoke_config(validation_fraction=0.0), tmp_path)
    assert Checkpointer(tmp_path).best_step() is None
    assert ar_jax.load(tmp_path).weights == "latest: step 4, EMA weights"
    with pytest.raises(ValueError, match=r"no checkpoint with a validation metric .* use weights='latest'"):
        ar_jax.load(tmp_path, weights="best")
    with pytest.raises(ValueError, match=r"weights='newest' must be one of 'default', 'best', 'latest'"):
        ar_jax.load(tmp_path, weights="newest")
    with pytest.raises(ValueError, match=r"validation_fraction: 0.0 -> 0.1 \(resume it with "
                                         r"--config.validation_fraction=0.0\)"):
        trainer.train_and_evaluate(smoke_config(), tmp_path)
