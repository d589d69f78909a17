"""Training through Grain token shards: killed three times and resumed bit-identically, metrics fetched only at
log/save/eval steps, a both-ways run over VQ shards (two processes: tests/test_grain_hosts.py)."""

import json
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

from ar_jax.data import tokenize
from ar_jax.training import trainer
from ar_jax.training.checkpoints import Checkpointer
from ar_jax.training.metrics import read_metrics
from tests.helpers import smoke_config

ROOT = Path(__file__).parent.parent
STEPS = dict(num_train_steps=40, checkpoint_every=3, log_every=1, eval_every=10)


@pytest.fixture(scope="module")
def digit_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    tokenize.tokenize(smoke_config(**{"loader.views": "flip"}), out, records_per_shard=400)
    return out


def config(shards, **overrides):
    return smoke_config(**{**STEPS, "loader.shards": str(shards), **overrides})


def lines(workdir):
    """Every metrics line, without the wall-clock rate."""
    return [{k: v for k, v in m.items() if k != "steps_per_s"} for m in read_metrics(workdir)]


def wait_for_checkpoint(workdir, after, proc, timeout=180):
    """The step of the first finished checkpoint newer than `after` (orbax writes commit_success.txt last)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        done = [int(p.parent.name) for p in (workdir / "checkpoints").glob("*/commit_success.txt")
                if p.parent.name.isdigit() and int(p.parent.name) > after]
        if done:
            return min(done)
        assert proc.poll() is None, f"training exited early with code {proc.returncode}"
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint after step {after} within {timeout}s")


def test_killed_three_times_ends_bit_identical_to_an_uninterrupted_run(tmp_path, digit_shards):
    straight = trainer.train_and_evaluate(config(digit_shards), tmp_path / "straight")
    workdir = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "train.py"), "--workdir", str(workdir), "--config",
           "configs/digits_pixels.py:smoke", f"--config.loader.shards={digit_shards}",
           *(f"--config.{k}={v}" for k, v in STEPS.items())]
    rng, saved = random.Random(1), 0
    for kill in range(3):  # each run is killed at a random moment after it saved a newer checkpoint
        with open(tmp_path / f"run{kill}.log", "w") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            saved = wait_for_checkpoint(workdir, saved, proc)
            time.sleep(rng.uniform(0.0, 0.5))
            assert proc.poll() is None, (tmp_path / f"run{kill}.log").read_text()[-3000:]
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert Checkpointer(workdir).latest_step() < STEPS["num_train_steps"]
    resumed = trainer.train_and_evaluate(config(digit_shards), workdir)
    jax.tree.map(np.testing.assert_array_equal, resumed.params, straight.params)
    jax.tree.map(np.testing.assert_array_equal, resumed.opt_state, straight.opt_state)
    jax.tree.map(np.testing.assert_array_equal, resumed.ema_params, straight.ema_params)
    assert lines(workdir) == lines(tmp_path / "straight")


def test_metrics_are_fetched_only_at_log_save_and_eval_steps(tmp_path, digit_shards, monkeypatch):
    fetched, real = [], trainer._fetch
    steps = []

    def counting(tree):
        fetched.append(len(steps))
        return real(tree)

    def batch(loader, mesh, step):
        steps.append(step)
        return real_batch(loader, mesh, step)

    real_batch = trainer.next_batch
    monkeypatch.setattr(trainer, "_fetch", counting)
    monkeypatch.setattr(trainer, "next_batch", batch)
    trainer.train_and_evaluate(config(digit_shards, num_train_steps=12, log_every=4, eval_every=12,
                                      checkpoint_every=6, validation_fraction=0.0), tmp_path)
    assert steps == list(range(12))
    assert fetched == [4, 6, 8, 12]  # one transfer at each step that logs, saves or evaluates; none in between
    assert [m["step"] for m in read_metrics(tmp_path) if "loss" in m] == [4, 8, 12]
    assert sorted(Checkpointer(tmp_path).manager.all_steps()) == [6, 12]


def test_a_non_finite_step_found_at_a_later_fetch_is_named_and_nothing_after_it_is_saved(tmp_path, digit_shards,
                                                                                         monkeypatch):
    steps, real = [], trainer.next_batch
    monkeypatch.setattr(trainer, "next_batch", lambda loader, mesh, step: steps.append(step) or real(loader, mesh,
                                                                                                     step))
    c = config(digit_shards, num_train_steps=20, checkpoint_every=10, log_every=10,
               **{"optimizer.learning_rate": 1e30, "optimizer.grad_clip": 1e30})
    with pytest.raises(FloatingPointError, match=r"at step 2 \(loss, gradients"):  # step 1's learning rate is 0
        trainer.train_and_evaluate(c, tmp_path)
    assert len(steps) == 10  # found at the first fetch, step 10's, and named by its own step
    assert Checkpointer(tmp_path).latest_step() is None  # step 10 was to be saved: it is not


def test_a_run_trained_both_ways_reads_captions_and_views_from_vq_shards(tmp_path):
    from ar_jax.config import load_config_file
    from ar_jax.data import shards
    from ar_jax.data.sources import get_dataset

    trainer.train_and_evaluate(load_config_file("configs/scenes_vq.py:smoke"), tmp_path / "vq")
    config = load_config_file("configs/scenes_any.py:smoke")
    config.unlock()
    config.tokenizer.workdir = str(tmp_path / "vq")
    config.loader.views = "flip"
    config.lock()
    tokenize.tokenize(config, tmp_path / "shards", records_per_shard=40)
    data = get_dataset(config.data)
    src = shards.ShardSource(tmp_path / "shards")
    assert [shards.decode_record(src[i])["caption"] for i in range(len(src))] == list(data.train_captions)
    assert shards.decode_record(src[0])["codes"].shape == (2, 64)  # the scene and its mirror, 8x8 codes each
    config.unlock()
    config.loader.shards = str(tmp_path / "shards")
    config.lock()
    trainer.train_and_evaluate(config, tmp_path / "any")
    rows = read_metrics(tmp_path / "any")
    assert any("text_loss" in r and "image_loss" in r for r in rows)
    assert any("test_caption_nll" in r and np.isfinite(r["test_caption_nll"]) for r in rows)
    index = json.loads((tmp_path / "shards/index.json").read_text())
    step = index["tokenizer"]["step"]
    index["tokenizer"]["step"] = step - 1  # shards of an earlier checkpoint of the same tokenizer run
    (tmp_path / "shards/index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=rf"tokenizer step {step - 1}, but the config's tokenizer has {step}"):
        trainer.train_and_evaluate(config, tmp_path / "stale")
