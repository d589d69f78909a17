"""Driver for tests/test_export.py, run in a subprocess with 8 forced CPU devices: lowers the default GPT config's
train step and sampler for TPU and CUDA with `jax.export`, on an (8,1,1) and a (2,2,2) mesh, and the splash-attention
train step for TPU, and the scanned + rematerialised train step (`scaled`); writes what it found as JSON.

    python tests/export_run.py OUT.json
"""

import functools
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def main(out_path: str) -> None:
    sys.path.insert(0, str(Path(__file__).parent.parent))
    from ar_jax import backends, builders, sharding
    from ar_jax.backends import Prepared
    from ar_jax.config import load_config_file
    from ar_jax.decode import sampling
    from ar_jax.training.state import init_state, make_optimizer, state_shardings
    from ar_jax.training.steps import train_step

    root = Path(__file__).parent.parent
    out = {"devices": jax.device_count()}
    for mesh_shape in ((8, 1, 1), (2, 2, 2)):
        config = load_config_file(str(root / "configs/digits_pixels.py"))
        config.unlock()
        config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh_shape
        mesh = sharding.make_mesh(config.mesh)
        cfg = builders.make_model_config(config)
        tx = make_optimizer(config)
        state_sh = state_shardings(cfg, tx, mesh, ema=True)
        state = jax.eval_shape(functools.partial(init_state, cfg, tx, ema=True), jax.random.key(0))
        state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state, state_sh)
        B = config.batch_size
        batch_sh = {"tokens": sharding.batch_sharding(mesh, 2), "cond": sharding.batch_sharding(mesh, 1)}
        batch = {"tokens": jax.ShapeDtypeStruct((B, cfg.seq_len), jnp.int32, sharding=batch_sh["tokens"]),
                 "cond": jax.ShapeDtypeStruct((B,), jnp.int32, sharding=batch_sh["cond"])}
        name = "x".join(map(str, mesh_shape))
        for platform, attention in (("tpu", "xla"), ("cuda", "xla"), ("tpu", "splash")):
            be = backends.for_platform(platform, attention, **({"mesh": mesh} if platform == "tpu" else {}))
            step = jax.jit(functools.partial(train_step, cfg=cfg, tx=tx, seed=0, label_dropout=0.1, ema_decay=0.999,
                                             backend=be),
                           in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, sharding.replicated(mesh)))
            exp = jax.export.export(step, platforms=[platform])(state, batch)
            text = exp.mlir_module()
            out[f"train_{name}_{platform}_{attention}"] = {
                "platforms": list(exp.platforms), "tpu_custom_call": "tpu_custom_call" in text,
                "sharded": "mhlo.sharding" in text or "sdy.sharding" in text}
        # the sampler: batch over the data axes, weights replicated, the reference decode path
        everywhere = sharding.replicated(mesh)
        params = jax.tree.map(lambda s, sh=everywhere: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                              state.params)
        labels = jax.ShapeDtypeStruct((8,), jnp.int32, sharding=sharding.batch_sharding(mesh, 1))
        prefix = jax.ShapeDtypeStruct((8, 0), jnp.int32, sharding=sharding.batch_sharding(mesh, 2))
        for platform in ("tpu", "cuda"):
            prepared = Prepared(params, backends.for_platform(platform))
            gen = jax.jit(functools.partial(sampling._generate, cfg=cfg, top_k=8, use_top_p=True, greedy=False,
                                            use_cfg=True, keep_logits=False))
            exp = jax.export.export(gen, platforms=[platform])(
                prepared, labels, prefix, jax.random.key(0), np.float32(1.0), np.float32(0.9), np.float32(2.0))
            out[f"sample_{name}_{platform}"] = {"platforms": list(exp.platforms),
                                                "out_shape": list(exp.out_avals[0].shape)}
    out.update(scaled(root))
    # decoding on one of 8 CPU devices takes the native kernels (arrays on one device), sharded weights do not
    from ar_jax.backends.cpu import kernels
    from ar_jax.models.transformer import prepare

    cfg = builders.make_model_config(load_config_file(str(root / "configs/digits_pixels.py:smoke")))
    params = jax.device_put(cfg.init(jax.random.key(0))[0], jax.devices()[3])
    one = prepare(params)
    gen = jax.jit(functools.partial(sampling._generate, cfg=cfg, top_k=0, use_top_p=False, greedy=True,
                                    use_cfg=True, keep_logits=False))
    hlo = gen.lower(one, np.zeros(2, np.int32), np.zeros((2, 0), np.int32), jax.random.key(0), np.float32(1),
                    np.float32(1), np.float32(2.0)).as_text()
    mesh = sharding.make_mesh(config.mesh)
    spread = prepare(jax.device_put(cfg.init(jax.random.key(0))[0], sharding.replicated(mesh)))
    out["decode_one_of_8"] = {"native": one.backend.native, "kernels_available": kernels.available(),
                              "rows_gemv_in_hlo": kernels.TARGET in hlo,
                              "attention_in_hlo": kernels.ATTENTION_TARGET in hlo,
                              "spread_native": spread.backend.native}
    Path(out_path).write_text(json.dumps(out))


def scaled(root: Path) -> dict:
    """The scaling options on the (2,2,2) mesh: the scanned + rematerialised train step, traced with the mesh in
    context (`sharding.on_mesh`, as the trainer does), exported for TPU and CUDA (its activation constraints counted),
    and run here on the 8 CPU devices against the unscanned step on one device from the same (restacked) weights."""
    from ar_jax import backends, builders, sharding
    from ar_jax.config import load_config_file
    from ar_jax.models.transformer import stack_layers
    from ar_jax.training.state import init_state, make_optimizer, state_shardings
    from ar_jax.training.steps import loss_and_grads, train_step

    config = load_config_file(str(root / "configs/digits_pixels.py:smoke"))
    config.unlock()
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
    config.model.num_heads, config.model.num_kv_heads, config.model.mlp_dim = 4, 2, 64
    config.model.scan_layers, config.model.remat = True, "dots"
    mesh = sharding.make_mesh(config.mesh)
    cfg = builders.make_model_config(config)
    flat = cfg.replace(scan_layers=False, remat="none")
    tx = make_optimizer(config)
    B = config.batch_size
    state_sh = state_shardings(cfg, tx, mesh)
    batch_sh = {"tokens": sharding.batch_sharding(mesh, 2), "cond": sharding.batch_sharding(mesh, 1)}
    step = lambda c, be=None: jax.jit(functools.partial(train_step, cfg=c, tx=tx, seed=0, label_dropout=0.0,
                                                        backend=be))
    out = {}
    abstract = jax.eval_shape(functools.partial(init_state, cfg, tx), jax.random.key(0))
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), abstract, state_sh)
    batch = {"tokens": jax.ShapeDtypeStruct((B, cfg.seq_len), jnp.int32, sharding=batch_sh["tokens"]),
             "cond": jax.ShapeDtypeStruct((B,), jnp.int32, sharding=batch_sh["cond"])}
    for platform in ("tpu", "cuda"):
        with jax.set_mesh(mesh):
            exp = jax.export.export(step(cfg, backends.for_platform(platform)), platforms=[platform])(abstract, batch)
        text = exp.mlir_module()
        constraints = [line for line in text.splitlines() if "sharding_constraint" in line]
        out[f"scan_remat_train_2x2x2_{platform}"] = {
            "platforms": list(exp.platforms), "constraints": len(constraints),
            "heads_on_tensor": any('[{"data", "fsdp"}, {}, {"tensor"}, {}]' in line for line in constraints),
            "mlp_on_tensor": any('[{"data", "fsdp"}, {}, {"tensor"}]' in line for line in constraints),
            "scanned": "stablehlo.while" in text}
    # its loss and gradients on the mesh vs the unscanned model's on one device, from the same (restacked) weights
    params = flat.init(jax.random.key(0))[0]
    params["output"] = jax.random.normal(jax.random.key(2), params["output"].shape)  # zero at init: no gradients
    tokens = jax.random.randint(jax.random.key(1), (B, cfg.seq_len), 0, cfg.vocab_size)
    labels = jnp.arange(B, dtype=jnp.int32) % cfg.num_classes
    grads = lambda c: lambda p, t, y: loss_and_grads(p, c, t, y, None)
    loss_one, g_one = jax.jit(grads(flat))(params, tokens, labels)
    run = sharding.on_mesh(jax.jit(grads(cfg), in_shardings=(state_sh.params, *batch_sh.values())), mesh)
    loss_mesh, g_mesh = run(jax.device_put(stack_layers(params, cfg.num_layers), state_sh.params),
                            jax.device_put(tokens, batch_sh["tokens"]), jax.device_put(labels, batch_sh["cond"]))
    want = jax.tree.leaves(stack_layers(g_one, cfg.num_layers))
    out["scan_remat_on_mesh"] = {
        "loss": [float(loss_one), float(loss_mesh)],
        "max_rel_grad_diff": max(float(np.abs(np.asarray(a) - b).max() / (np.abs(b).max() + 1e-12))
                                 for a, b in zip(jax.tree.leaves(g_mesh), want, strict=True)),
        "grad_wq_max": float(np.abs(g_one["layers_0"]["attention"]["wq"]).max())}
    return out


if __name__ == "__main__":
    main(sys.argv[1])
