"""Sharding by logical names: 8 forced CPU devices (in subprocesses) match one device; checks before compiling."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from ar_jax import sharding
from tests.helpers import run_two_processes

ROOT = Path(__file__).parent.parent


def run(mode, workdir, devices):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(ROOT / "tests/sharded_run.py"), mode, str(workdir)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((Path(workdir) / f"{mode}.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    single = run("single", root, 1)
    meshes = run("meshes", root, 8)
    restore = run("restore", root, 1)
    return single, meshes, restore


def test_meshes_match_one_device(runs):
    _, meshes, _ = runs
    assert meshes["devices"] == 8
    np.testing.assert_allclose(meshes["mesh_2_2_2"]["losses"], meshes["ref_losses"], rtol=1e-5)
    assert meshes["mesh_2_2_2"]["max_rel_param_diff"] <= 1e-5, meshes["mesh_2_2_2"]["max_rel_param_diff"]


def test_parameters_are_sharded_as_the_rules_say(runs):
    _, meshes, _ = runs
    m = meshes["mesh_2_2_2"]  # fsdp=2 splits embed (32), tensor=2 splits heads (4) and mlp (64)
    assert m["spec_wq"] == ["fsdp", "tensor", None]
    assert m["spec_w1"] == ["fsdp", "tensor"]
    assert m["spec_mu_w1"] == m["spec_w1"]  # Adam moments follow their parameters
    assert m["spec_tok"] == [None, "fsdp"]  # vocab 17 is not divisible by 2: replicated
    assert m["restored_spec_wq"] == m["spec_wq"]  # a 1-device checkpoint restored onto the mesh


def test_pure_data_parallelism_replicates_every_parameter():
    from ar_jax.models.transformer import TransformerConfig, param_shapes

    cfg = TransformerConfig(vocab_size=16, seq_len=16, num_classes=3, dim=32, num_layers=1, num_heads=4, mlp_dim=64)
    mesh = SimpleNamespace(shape={"data": 8, "fsdp": 1, "tensor": 1})  # spec_for reads only the axis sizes
    is_spec = lambda x: isinstance(x, PartitionSpec) or x is None  # noqa: E731
    specs = jax.tree.map(lambda s, n: sharding.spec_for(s.shape, n, mesh), param_shapes(cfg), cfg.logical_axes(),
                         is_leaf=is_spec)
    assert all(all(a is None for a in spec) for spec in jax.tree.leaves(specs, is_leaf=is_spec))
    wide = SimpleNamespace(shape={"data": 1, "fsdp": 1, "tensor": 4})
    assert sharding.spec_for((32, 4, 8), cfg.logical_axes()["layers_0"]["attention"]["wq"], wide) == \
        PartitionSpec(None, "tensor", None)


def test_sampling_with_batch_sharded_over_data_matches_one_device(runs):
    _, meshes, _ = runs
    assert meshes["sampling_equal"]


def test_checkpoint_from_8_devices_restores_on_one(runs):
    _, _, restore = runs
    assert restore["restore_max_abs_diff"] == 0.0
    assert len(restore["restore_devices"]) == 1


def mesh_cfg(**kw):
    return ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1, **kw})


def test_mesh_that_does_not_divide_the_devices_is_refused():
    with pytest.raises(ValueError, match="do not divide the 8 devices"):
        sharding.mesh_shape(mesh_cfg(fsdp=3), 8)
    with pytest.raises(ValueError, match="uses 4 devices but 8 are present"):
        sharding.mesh_shape(mesh_cfg(data=2, fsdp=2), 8)
    with pytest.raises(ValueError, match="at most one"):
        sharding.mesh_shape(mesh_cfg(fsdp=-1), 8)
    assert sharding.mesh_shape(mesh_cfg(tensor=2), 8) == (4, 1, 2)


def test_batch_not_divisible_by_data_parallel_size_is_refused():
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), sharding.MESH_AXES)
    sharding.check_batch(7, mesh)  # one device: anything goes
    fake = type("M", (), {"shape": {"data": 2, "fsdp": 3, "tensor": 1}})()
    with pytest.raises(ValueError, match=r"batch_size=8 is not divisible by the data-parallel size 6"):
        sharding.check_batch(8, fake)


def test_two_processes_over_127_0_0_1_match_one_process(runs, tmp_path):

    single, _, _ = runs
    got = run_two_processes(tmp_path / "mp")
    assert (got["devices"], got["processes"]) == (4, 2)
    np.testing.assert_allclose(got["losses"], single["ref_losses"], rtol=1e-5)


def test_bfloat16_compute_keeps_float32_parameters_logits_and_loss():
    from ar_jax.models.transformer import Transformer
    from tests.helpers import make_test_model

    cfg, params = make_test_model(dtype="bfloat16")
    assert all(p.dtype == np.float32 for p in jax.tree.leaves(params))
    tokens = jax.random.randint(jax.random.key(0), (2, cfg.seq_len), 0, cfg.vocab_size)
    logits, _ = Transformer(cfg).apply({"params": params}, tokens[:, :-1], np.array([0, 1]))
    assert logits.dtype == np.float32
    ref, _ = Transformer(cfg.replace(dtype="float32")).apply({"params": params}, tokens[:, :-1], np.array([0, 1]))
    np.testing.assert_allclose(logits, ref, atol=0.1)  # bf16 arithmetic, close to float32
    assert float(np.abs(np.asarray(logits) - np.asarray(ref)).max()) > 0  # but really computed in bf16
    nll = cfg.token_nll(params, tokens, np.array([0, 1]))
    assert nll.dtype == np.float32 and np.isfinite(np.asarray(nll)).all()
