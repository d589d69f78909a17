"""Driver for tests/test_sharding.py, run in subprocesses with 1 or 8 forced CPU devices.

    python tests/sharded_run.py single WORKDIR   # reference run on one device
    python tests/sharded_run.py meshes WORKDIR   # the same run on 8-device meshes, compared in-process
    python tests/sharded_run.py restore WORKDIR  # restore an 8-device checkpoint on one device
"""

import functools
import json
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent))  # this checkout's ar_jax, not an installed one

MESHES = [(2, 2, 2)]  # data, fsdp and tensor together (pure data parallelism: test_sharding's spec_for test)


def config(mesh=(1, 1, 1)):
    from tests.helpers import smoke_config

    return smoke_config(num_train_steps=3, log_every=1, eval_every=3, checkpoint_every=3, batch_size=8,
                        **{"mesh.data": mesh[0], "mesh.fsdp": mesh[1], "mesh.tensor": mesh[2],
                           "model.num_heads": 4, "model.num_kv_heads": 2, "model.mlp_dim": 64})


def losses(workdir):
    from ar_jax.training.metrics import read_metrics

    return [m["loss"] for m in read_metrics(workdir) if "loss" in m]


def flat(tree):
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def main(mode, root):
    from ar_jax.decode import sampling
    from ar_jax.training import checkpoints, trainer

    root = Path(root)
    out = {"devices": jax.device_count()}
    if mode == "single":
        trainer.train_and_evaluate(config(), root / "ref")
        out["ref_losses"] = losses(root / "ref")
    elif mode == "meshes":
        from ar_jax import builders, sharding
        from ar_jax.backends.cpu import CpuBackend
        from ar_jax.models.transformer import prepare
        from ar_jax.training.state import init_state, make_optimizer, state_shardings

        ref = checkpoints.Checkpointer(root / "ref")
        for mesh_shape in MESHES:
            c = config(mesh_shape)
            name = "mesh_" + "_".join(map(str, mesh_shape))
            state = trainer.train_and_evaluate(c, root / name)
            mesh = sharding.make_mesh(c.mesh)
            cfg = builders.make_model_config(c)
            tx = make_optimizer(c)
            ema = c.ema_decay > 0
            target = jax.jit(functools.partial(init_state, cfg, tx, ema=ema),
                             out_shardings=state_shardings(cfg, tx, mesh, ema=ema))(jax.random.key(1))
            ref_state = ref.restore(target)  # written on 1 device, restored onto this mesh
            got, want = flat(state.params), flat(ref_state.params)
            out[name] = {
                "losses": losses(root / name),
                "max_rel_param_diff": max(float(np.abs(got[k] - want[k]).max() / (np.abs(want[k]).max() + 1e-12))
                                          for k in want),
                "restored_spec_wq": list(ref_state.params["layers_0"]["attention"]["wq"].sharding.spec),
                "spec_wq": list(state.params["layers_0"]["attention"]["wq"].sharding.spec),
                "spec_w1": list(state.params["layers_0"]["feed_forward"]["w1"].sharding.spec),
                "spec_tok": list(state.params["tok_embeddings"].sharding.spec),
                "spec_mu_w1": list(state.opt_state[1][0].mu["layers_0"]["feed_forward"]["w1"].sharding.spec),
            }
            if name == "mesh_2_2_2":
                np.savez(root / "mesh_2_2_2_params.npz", **flat(state.params))
                # sampling with the batch sharded over (data, fsdp) and replicated weights vs on one device
                labels = np.arange(8, dtype=np.int32) % 10
                kw = dict(cfg=cfg, top_k=0, use_top_p=True, greedy=False, use_cfg=True, keep_logits=False)
                args = (np.float32(1.0), np.float32(0.9), np.float32(2.0))
                rng = jax.random.key(3)
                xla_cpu = CpuBackend(native=False)  # one formulation for both: the comparison is the sharding's
                one = prepare(jax.device_put(state.params, jax.devices()[0]), xla_cpu)
                a = sampling._generate(one, labels, np.zeros((8, 0), np.int32), rng, *args, **kw)[0]
                bs = sharding.batch_sharding(mesh, 1)
                everywhere = prepare(jax.device_put(state.params, sharding.replicated(mesh)), xla_cpu)
                b = sampling._generate(everywhere, jax.device_put(labels, bs),
                                       jax.device_put(np.zeros((8, 0), np.int32), sharding.batch_sharding(mesh, 2)),
                                       rng, *args, **kw)[0]
                out["sampling_equal"] = bool(np.array_equal(np.asarray(a), np.asarray(b)))
                out["sampling_spec"] = list(b.sharding.spec) if hasattr(b.sharding, "spec") else str(b.sharding)
        out["ref_losses"] = losses(root / "ref")
    elif mode == "restore":
        import ar_jax

        pipe = ar_jax.load(root / "mesh_2_2_2", weights="raw")
        saved = np.load(root / "mesh_2_2_2_params.npz")
        got = flat(pipe.params)
        out["restore_max_abs_diff"] = max(float(np.abs(got[k] - saved[k]).max()) for k in saved.files)
        out["restore_devices"] = sorted({str(d) for v in jax.tree.leaves(pipe.params) for d in v.devices()})
    (root / f"{mode}.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
