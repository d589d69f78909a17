"""Nothing trained is lost: SIGTERM, kill -9 at random moments, corrupt checkpoints, NaN losses."""

import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import ar_jax
from ar_jax.training import trainer
from ar_jax.training.checkpoints import Checkpointer
from ar_jax.training.metrics import read_metrics
from tests.helpers import smoke_config

ROOT = Path(__file__).parent.parent
ARGS = ["--config", "configs/digits_pixels.py:smoke", "--config.num_train_steps=80", "--config.checkpoint_every=4",
        "--config.log_every=1", "--config.eval_every=10"]


def train_cmd(workdir, *extra):
    return [sys.executable, str(ROOT / "train.py"), "--workdir", str(workdir), *ARGS, *extra]


def overrides_config():
    return smoke_config(num_train_steps=80, checkpoint_every=4, log_every=1, eval_every=10)


def wait_for_step(workdir, step, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if any(m.get("step", 0) >= step for m in read_metrics(workdir)):
            return
        assert proc.poll() is None, f"training exited early with code {proc.returncode}"
        time.sleep(0.05)
    raise AssertionError(f"no step {step} within {timeout}s")


def losses(workdir):
    return [(m["step"], m["loss"]) for m in read_metrics(workdir) if "loss" in m]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    return workdir, trainer.train_and_evaluate(overrides_config(), workdir)


def test_sigterm_saves_and_exits_cleanly_then_resumes(tmp_path, straight):
    proc = subprocess.Popen(train_cmd(tmp_path), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    wait_for_step(tmp_path, 6, proc)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out[-2000:]
    assert "preempted (SIGTERM) at step" in out
    stopped = Checkpointer(tmp_path).latest_step()
    assert 6 <= stopped < 80
    assert stopped == max(step for step, _ in losses(tmp_path))  # saved at the step it stopped on
    assert not (tmp_path / "samples.png").exists()
    state = trainer.train_and_evaluate(overrides_config(), tmp_path)
    jax.tree.map(np.testing.assert_array_equal, state.params, straight[1].params)
    assert losses(tmp_path) == losses(straight[0])


def test_kill_9_at_random_moments_loses_nothing(tmp_path, straight):
    rng = random.Random(0)
    kills = 0
    while kills < 2:
        log = open(tmp_path / f"run{kills}.log", "w")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(train_cmd(tmp_path), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        done = [m["step"] for m in read_metrics(tmp_path) if "loss" in m]
        wait_for_step(tmp_path, (max(done) if done else 0) + 1, proc)
        time.sleep(rng.uniform(0.0, 0.8))
        assert proc.poll() is None, (tmp_path / f"run{kills}.log").read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
        kills += 1
    assert kills == 2
    state = trainer.train_and_evaluate(overrides_config(), tmp_path)
    jax.tree.map(np.testing.assert_array_equal, state.params, straight[1].params)
    jax.tree.map(np.testing.assert_array_equal, state.opt_state, straight[1].opt_state)
    assert losses(tmp_path) == losses(straight[0])
    resumed, ref = Checkpointer(tmp_path), Checkpointer(straight[0])  # the best by validation is known after kills
    assert resumed.best_step() == ref.best_step() is not None
    assert resumed.metrics(resumed.best_step()) == ref.metrics(ref.best_step())
    assert set(resumed.manager.all_steps()) == set(ref.manager.all_steps())


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, straight, caplog, monkeypatch):
    real = trainer.next_batch

    def crash_at_9(loader, mesh, step):
        if step == 9:
            raise KeyboardInterrupt("simulated crash")
        return real(loader, mesh, step)

    monkeypatch.setattr(trainer, "next_batch", crash_at_9)
    with pytest.raises(KeyboardInterrupt):
        trainer.train_and_evaluate(overrides_config(), tmp_path)
    monkeypatch.setattr(trainer, "next_batch", real)
    for f in (tmp_path / "checkpoints/9").rglob("*"):
        if f.is_file() and f.stat().st_size > 64 and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # truncate the array data
    with caplog.at_level(logging.WARNING):
        pipe = ar_jax.load(tmp_path)  # reading still works, from the previous checkpoint
    assert "checkpoints/9 is unreadable" in caplog.text
    assert pipe.sample([1]).shape == (1, 8, 8, 1)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        state = trainer.train_and_evaluate(overrides_config(), tmp_path)  # resumes from 8
    assert "checkpoints/9 is unreadable" in caplog.text
    assert any(p.name.startswith("unreadable_9_") for p in (tmp_path / "checkpoints").iterdir())  # kept aside
    jax.tree.map(np.testing.assert_array_equal, state.params, straight[1].params)
    assert losses(tmp_path) == losses(straight[0])


def test_nan_loss_stops_with_the_step_named_and_keeps_good_checkpoint(tmp_path):
    config = smoke_config(num_train_steps=20, checkpoint_every=1, **{"optimizer.learning_rate": 1e30,
                                                                      "optimizer.grad_clip": 1e30})
    with pytest.raises(FloatingPointError, match=r"loss is \S+ at step \d+ \(loss, gradients"):
        trainer.train_and_evaluate(config, tmp_path)
    params = ar_jax.load(tmp_path).params
    assert all(bool(np.isfinite(x).all()) for x in jax.tree.leaves(params))


def test_nan_steps_can_be_skipped(tmp_path):
    config = smoke_config(num_train_steps=6, skip_nonfinite_steps=True,
                          **{"optimizer.learning_rate": 1e30, "optimizer.grad_clip": 1e30})
    state = trainer.train_and_evaluate(config, tmp_path)
    assert int(state.step) == 6
    assert any("skipped_nonfinite" in m for m in read_metrics(tmp_path))
    assert all(bool(np.isfinite(x).all()) for x in jax.tree.leaves(state.params))
