"""Proof that the accelerator paths lower on a CPU-only machine: `jax.export` for TPU and CUDA of the default GPT
config's train step (XLA attention, and splash on TPU as `tpu_custom_call`s) and sampler, on forced 8-device meshes
(tests/export_run.py in a subprocess); the scanned + rematerialised step with activation constraints, exported and run
on the mesh. cuDNN attention cannot be traced without CUDA: its test runs on a GPU only."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ar_jax import backends

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "export.json"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests/export_run.py"), str(out)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("mesh", ["8x1x1", "2x2x2"])
@pytest.mark.parametrize("platform", ["tpu", "cuda"])
def test_train_step_and_sampler_export_for_accelerators(exported, mesh, platform):
    assert exported["devices"] == 8
    train = exported[f"train_{mesh}_{platform}_xla"]
    assert train["platforms"] == [platform] and train["sharded"] and not train["tpu_custom_call"]
    sample = exported[f"sample_{mesh}_{platform}"]
    assert sample["platforms"] == [platform] and sample["out_shape"] == [8, 64]


@pytest.mark.parametrize("mesh", ["8x1x1", "2x2x2"])
def test_splash_train_step_exports_for_tpu_as_a_custom_call(exported, mesh):
    splash = exported[f"train_{mesh}_tpu_splash"]
    assert splash["platforms"] == ["tpu"] and splash["tpu_custom_call"] and splash["sharded"]


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
def test_scanned_rematerialised_train_step_exports_with_activation_constraints(exported, platform):
    """Traced with the mesh in context (as the trainer does), the step carries the activations' logical layout: the
    batch over (data, fsdp), heads and MLP width over tensor; the layers are one scanned loop."""
    got = exported[f"scan_remat_train_2x2x2_{platform}"]
    assert got["platforms"] == [platform] and got["scanned"]
    assert got["constraints"] >= 7 and got["heads_on_tensor"] and got["mlp_on_tensor"]


def test_scanned_rematerialised_gradients_on_a_mesh_match_the_loop_on_one_device(exported):
    got = exported["scan_remat_on_mesh"]
    assert got["grad_wq_max"] > 1e-3  # gradients that could be wrong
    np.testing.assert_allclose(got["loss"][1], got["loss"][0], rtol=1e-5)
    assert got["max_rel_grad_diff"] < 1e-5, got["max_rel_grad_diff"]


def test_decoding_on_one_of_eight_cpu_devices_takes_the_native_kernels(exported):
    """The backend comes from where the arrays live: weights on one of 8 forced devices decode through the native
    kernels (before the seam, any second device switched them off); weights spread over the mesh do not."""
    d = exported["decode_one_of_8"]
    assert d["native"] == d["rows_gemv_in_hlo"] == d["attention_in_hlo"] == d["kernels_available"]
    assert not d["spread_native"]


@pytest.mark.skipif(not any(d.platform == "gpu" for d in jax.devices()),
                    reason="cuDNN attention needs a CUDA GPU to trace; this machine has none")
def test_cudnn_attention_equals_xla_on_a_gpu():
    B, S, H, KV, D = 2, 64, 4, 2, 32
    q = jax.random.normal(jax.random.key(0), (B, S, H, D), jnp.bfloat16)
    k, v = (jax.random.normal(jax.random.key(i), (B, S, KV, D), jnp.bfloat16) for i in (1, 2))
    gpu = backends.for_platform("gpu", "cudnn")
    got = gpu.attention(q, k, v, causal=True, mask=None, scale=D ** -0.5)
    want = backends.XLA.attention(q, k, v, causal=True, mask=None, scale=D ** -0.5)
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=2e-2)
