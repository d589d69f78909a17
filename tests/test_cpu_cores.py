"""Choosing the CPU cores XLA:CPU runs on (ar_jax.backends.cpu.cores): every thread moved, refused once JAX has
started, the automatic choice from a run's size."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from ar_jax.backends.cpu import cores
from ar_jax.cli import choose_cores, estimated_params
from ar_jax.models.transformer import TransformerConfig, init_params

ROOT = Path(__file__).parent.parent

CHILD = """
import json, os, threading
import ar_jax
from ar_jax.backends.cpu import cores
allowed = cores.allowed()
ready, stop = threading.Event(), threading.Event()
t = threading.Thread(target=lambda: (ready.set(), stop.wait()))
t.start(); ready.wait()  # a thread that exists before the choice
used = ar_jax.use_cpu_cores(1)
import jax.numpy as jnp
float(jnp.ones(3).sum())  # JAX starts here: XLA:CPU's threads are made now
masks = {tid: sorted(os.sched_getaffinity(int(tid))) for tid in os.listdir("/proc/self/task")}
stop.set(); t.join()
print(json.dumps({"allowed": allowed, "used": used, "masks": masks, "again": ar_jax.use_cpu_cores(1)}))
"""
LATE = """
import jax.numpy as jnp
import ar_jax
float(jnp.ones(3).sum())
try:
    ar_jax.use_cpu_cores(1)
except ValueError as e:
    print(e)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads thread affinities from Linux's /proc")
def test_one_core_for_every_thread_and_refused_once_jax_started():
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["used"] == out["allowed"][:1]
    assert len(out["masks"]) >= 3  # the main thread, ours, and XLA's
    assert all(mask == out["used"] for mask in out["masks"].values()), out["masks"]
    assert out["again"] == out["used"]  # already on one core: nothing to change, so not refused
    late = subprocess.run([sys.executable, "-c", LATE], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert late.returncode == 0, late.stderr[-2000:]
    if len(out["allowed"]) > 1:  # fewer cores than allowed, asked once JAX runs: refused, saying when to ask
        assert "already started" in late.stdout and "before any JAX computation" in late.stdout


def test_parse_and_the_automatic_choice():
    assert cores.parse("auto") == "auto" and cores.parse("all") == "all" and cores.parse("2") == 2
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ValueError, match="must be auto, all or a positive integer"):
            cores.parse(bad)
    with pytest.raises(ValueError, match="positive integer or 'all'"):
        cores.use_cores(0)
    assert cores.use_cores("all") == cores.allowed() and cores.use_cores(10_000) == cores.allowed()
    assert cores.auto_cores(1_200_000, 2) == 1  # the scenes run at batch 1 with CFG
    assert cores.auto_cores(100_000_000, 64) == "all"  # GPT-B at batch 32
    assert choose_cores("auto", None, 1) == cores.allowed()  # no run to size: every core


@pytest.mark.parametrize("model", [
    dict(dim=128, num_layers=6, num_heads=4, num_kv_heads=2, mlp_dim=384),
    dict(dim=256, num_layers=4, num_heads=8, num_kv_heads=0, mlp_dim=0),
])
def test_estimated_params_from_a_saved_config(tmp_path, model):
    (tmp_path / "config.json").write_text(json.dumps({"model": {"family": "transformer", **model},
                                                      "tokenizer": {"codebook_size": 512}}))
    cfg = TransformerConfig(vocab_size=512, seq_len=64, num_classes=10, dim=model["dim"],
                            num_layers=model["num_layers"], num_heads=model["num_heads"],
                            num_kv_heads=model["num_kv_heads"] or None, mlp_dim=model["mlp_dim"] or None)
    shapes = jax.eval_shape(lambda k: init_params(cfg, k)[0], jax.random.key(0))
    real = sum(x.size for x in jax.tree.leaves(shapes)) - 512 * model["dim"]  # an embedding reads one row a step
    assert abs(estimated_params(str(tmp_path)) - real) / real < 0.1
    medusa = tmp_path / "heads"
    medusa.mkdir()
    (medusa / "config.json").write_text(json.dumps({"kind": "medusa", "base_workdir": str(tmp_path)}))
    assert estimated_params(str(medusa)) == estimated_params(str(tmp_path))
    float(jax.numpy.ones(2).sum())  # JAX has started in this process: "auto" keeps the cores, a count is refused
    assert choose_cores("auto", str(tmp_path), 1) == cores.allowed()
    if len(cores.allowed()) > 1:
        with pytest.raises(ValueError, match="already started"):
            choose_cores("1", str(tmp_path), 1)
    (tmp_path / "config.json").write_text(json.dumps({"model": {"family": "pixelcnn"}}))
    assert estimated_params(str(tmp_path)) is None
