"""Two real processes over 127.0.0.1 training on Grain token shards: disjoint rows of the one-process batches, the
same losses, and SIGTERM to one host saving the same step on both (orbax's preemption sync point)."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ar_jax.data import tokenize
from ar_jax.training import trainer
from ar_jax.training.checkpoints import Checkpointer
from ar_jax.training.metrics import read_metrics
from tests.helpers import run_two_processes, smoke_config
from tests.test_reliability import wait_for_step

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def digit_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    tokenize.tokenize(smoke_config(**{"loader.views": "flip"}), out, records_per_shard=400)
    return out


def test_two_processes_read_disjoint_rows_and_match_one_process(tmp_path, digit_shards, monkeypatch):
    from tests.sharded_run import config as sharded_config

    rows, real = [], trainer.next_batch

    def recording(loader, mesh, step):
        batch = real(loader, mesh, step)
        rows.append(np.asarray(batch["tokens"]))
        return batch

    monkeypatch.setattr(trainer, "next_batch", recording)
    one = sharded_config()
    one.loader.shards = str(digit_shards)
    trainer.train_and_evaluate(one, tmp_path / "one")
    got = run_two_processes(tmp_path / "two", digit_shards)
    assert (got["devices"], got["processes"]) == (4, 2)
    shares = [np.load(tmp_path / f"two/rows_{p}.npy") for p in range(2)]  # [steps, 4, 64] each
    assert shares[0].shape == (3, 4, 64)
    np.testing.assert_array_equal(np.concatenate(shares, axis=1), np.stack(rows))  # disjoint halves of each batch
    np.testing.assert_allclose(got["losses"], [m["loss"] for m in read_metrics(tmp_path / "one") if "loss" in m],
                               rtol=1e-5)
    saved = sorted(p.name for p in (tmp_path / "two/checkpoints/3/data").glob("process_*"))
    assert saved == ["process_0-of-2.json", "process_1-of-2.json"]  # each host's loader position


def test_sigterm_to_one_of_two_processes_saves_the_same_step_on_both(tmp_path, digit_shards):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests/multiprocess_run.py"), str(port), str(i),
                               str(tmp_path), str(digit_shards), "60"], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        wait_for_step(tmp_path, 4, procs[0], timeout=240)
        procs[1].send_signal(signal.SIGTERM)  # one host is told to stop: orbax's sync point stops both
        outs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    said = [[ln for ln in o.splitlines() if ln.startswith("preempted (SIGTERM) at step")] for o in outs]
    assert said[0] == said[1] and len(said[0]) == 1, said
    step = int(said[0][0].split()[4].rstrip(":"))
    assert 4 <= step < 60 and Checkpointer(tmp_path).latest_step() == step
    assert sorted(p.name for p in (tmp_path / f"checkpoints/{step}/data").glob("process_*")) == [
        "process_0-of-2.json", "process_1-of-2.json"]
