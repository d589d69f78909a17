"""Training: loss falls, an interrupted run resumes to exactly the same parameters, workdir and config checks."""

import json

import jax
import numpy as np
import pytest

import ar_jax
from ar_jax.config import apply_overrides, load_config_file
from ar_jax.data import pipeline
from ar_jax.decode import sampling
from ar_jax.training import trainer
from ar_jax.training.metrics import read_metrics
from tests.helpers import smoke_config


def test_loss_falls_on_a_tiny_run(tmp_path):
    config = smoke_config(num_train_steps=30, log_every=5, eval_every=30, checkpoint_every=30,
                          **{"optimizer.warmup_steps": 3, "optimizer.learning_rate": 3e-3, "model.token_dropout": 0.0,
                             "model.resid_dropout": 0.0, "model.ffn_dropout": 0.0})
    trainer.train_and_evaluate(config, tmp_path)
    losses = [m["loss"] for m in read_metrics(tmp_path) if "loss" in m]
    assert losses[-1] < losses[0] - 0.5, losses
    assert (tmp_path / "samples.png").exists()
    assert [m["step"] for m in read_metrics(tmp_path) if "test_bits_per_dim" in m] == [30]


def test_interrupted_run_resumes_to_identical_parameters(tmp_path, monkeypatch):
    config = smoke_config(num_train_steps=8, checkpoint_every=3, log_every=1, eval_every=4)
    straight = trainer.train_and_evaluate(config, tmp_path / "straight")

    real = trainer.next_batch
    def crash_at_6(loader, mesh, step):
        if step == 6:
            raise KeyboardInterrupt("simulated kill")
        return real(loader, mesh, step)
    monkeypatch.setattr(trainer, "next_batch", crash_at_6)
    with pytest.raises(KeyboardInterrupt):
        trainer.train_and_evaluate(config, tmp_path / "resumed")
    monkeypatch.setattr(trainer, "next_batch", real)
    # the newest two (keep_checkpoints=2) and the best by validation, here step 4 (the only one evaluated)
    assert sorted(p.name for p in (tmp_path / "resumed/checkpoints").iterdir() if p.name.isdigit()) == ["4", "6"]
    resumed = trainer.train_and_evaluate(config, tmp_path / "resumed")

    assert int(resumed.step) == int(straight.step) == 8
    jax.tree.map(np.testing.assert_array_equal, resumed.params, straight.params)
    jax.tree.map(np.testing.assert_array_equal, resumed.opt_state, straight.opt_state)
    strip = lambda ms: [{k: v for k, v in m.items() if k != "steps_per_s"} for m in ms]
    assert strip(read_metrics(tmp_path / "resumed")) == strip(read_metrics(tmp_path / "straight"))


def test_rerun_of_a_finished_run_does_nothing_new(tmp_path):
    config = smoke_config()
    first = trainer.train_and_evaluate(config, tmp_path)
    again = trainer.train_and_evaluate(config, tmp_path)
    jax.tree.map(np.testing.assert_array_equal, first.params, again.params)


def test_workdir_of_another_model_is_refused(tmp_path):
    trainer.train_and_evaluate(smoke_config(), tmp_path)
    with pytest.raises(ValueError, match=r"model.dim: 32 -> 48.*new --workdir"):
        trainer.train_and_evaluate(smoke_config(**{"model.dim": 48}), tmp_path)


def test_checkpoint_that_does_not_match_its_config_is_refused(tmp_path):
    trainer.train_and_evaluate(smoke_config(), tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved["model"]["mlp_dim"] = 80  # as if the config had been edited by hand
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"shape \(32, 64\), but the config builds \(32, 80\)"):
        ar_jax.load(tmp_path)


def test_load_samples_and_scores(tmp_path):
    trainer.train_and_evaluate(smoke_config(), tmp_path)
    pipe = ar_jax.load(tmp_path)
    images = pipe.sample([0, 3, 9], seed=1)
    assert images.shape == (3, 8, 8, 1) and images.dtype == np.uint8
    levels = set(np.round(np.arange(17) * 255 / 16).astype(int))
    assert set(np.unique(images).tolist()) <= levels
    np.testing.assert_array_equal(images, pipe.sample([0, 3, 9], seed=1))
    # sampling reads the decode layout, made once per params object; same tokens as from the training layout
    _, decoding = pipe.for_decoding()
    assert pipe.for_decoding()[1] is decoding
    direct = sampling.generate(pipe.params, pipe.model_config, [0, 3, 9], jax.random.key(1),
                               **pipe.config.sampling.to_dict())
    np.testing.assert_array_equal(pipe.sample_tokens([0, 3, 9], seed=1), direct)
    pipe.params = jax.tree.map(lambda x: x * 1.0, pipe.params)
    assert pipe.for_decoding()[1] is not decoding
    bpd = pipe.bits_per_dim(images, [0, 3, 9])
    assert bpd.shape == (3,) and np.all(bpd > 0)
    done = pipe.complete(images, 4, [0, 3, 9], seed=2)
    np.testing.assert_array_equal(done[:, :4], images[:, :4])
    with pytest.raises(ValueError, match="label 10 is outside"):
        pipe.sample([10])
    with pytest.raises(ValueError, match="one label per image"):
        pipe.bits_per_dim(images, [0, 1])
    with pytest.raises(ValueError, match="not an ar_jax workdir"):
        ar_jax.load(tmp_path / "nothing")


def test_unknown_config_key_and_bad_type():
    config = load_config_file("configs/digits_pixels.py")
    with pytest.raises(ValueError, match=r"--config.batch_sise is not a key.*--config.batch_size"):
        apply_overrides(config, ["--config.batch_sise=3"])
    with pytest.raises(ValueError, match="batch_size='abc'|is not a valid int"):
        apply_overrides(config, ["--config.batch_size=abc"])
    out = apply_overrides(config, ["--config.model.dim=64", "--config.sampling.cfg_scale=2",
                                   "--config.model.rope=1d"])
    assert (out.model.dim, out.sampling.cfg_scale, out.model.rope) == (64, 2.0, "1d")


def test_bad_training_config_values():
    with pytest.raises(ValueError, match="batch_size=0"):
        trainer.check_config(smoke_config(batch_size=0))
    with pytest.raises(ValueError, match="label_dropout=1.5"):
        trainer.check_config(smoke_config(label_dropout=1.5))


def test_data_order_is_a_pure_function_of_seed_and_step():
    source = pipeline.ArraySource({"i": np.arange(100)})
    a = [pipeline.batches(source, 32, 0)[s]["i"] for s in range(10)]
    b = [pipeline.batches(source, 32, 0)[s]["i"] for s in range(10)]
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    flat = np.concatenate(a[:3] + [a[3][:4]])  # the first 100 examples form one epoch
    assert sorted(flat.tolist()) == list(range(100))
    assert not np.array_equal(pipeline.batches(source, 32, 1)[0]["i"], a[0])


def test_tensorboard_events_hold_scalars_and_sample_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer.train_and_evaluate(smoke_config(sample_every=2), tmp_path)
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"loss", "test_bits_per_dim", "learning_rate", "steps_per_s"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("loss")] == [2, 4]
    assert "samples" in tags["images"] and [e.step for e in acc.Images("samples")] == [2, 4]
    assert acc.Images("samples")[-1].width > 0
