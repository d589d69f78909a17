"""Per-device memory of a GPT-B-sized train step: replicated vs FSDP over 8 devices vs FSDP x tensor.

    python benchmarks/memory.py [--batch 8]

Runs on 8 forced CPU devices (set here, before JAX starts) and reads the compiled step's memory analysis
(arguments = parameters + optimizer state + batch, temporaries = activations and workspace), so no
accelerator is needed; the per-device sizes are what the same config would use on 8 GPUs/TPU cores.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import optax  # noqa: E402

from ar_jax import sharding  # noqa: E402
from ar_jax.models.transformer import TransformerConfig  # noqa: E402
from ar_jax.training.state import init_state, state_shardings  # noqa: E402
from ar_jax.training.steps import train_step  # noqa: E402

MESHES = {"replicated (data=8)": (8, 1, 1), "FSDP (fsdp=8)": (1, 8, 1), "FSDP x tensor (fsdp=4, tensor=2)": (1, 4, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    cfg = TransformerConfig(vocab_size=16384, seq_len=256, num_classes=1000, dim=768, num_layers=12, num_heads=12,
                            multiple_of=256)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.05))
    abstract = jax.eval_shape(lambda r: init_state(cfg, tx, r), jax.random.key(0))
    n_params = sum(x.size for x in jax.tree.leaves(abstract.params))
    rows = []
    for name, shape in MESHES.items():
        mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(zip(sharding.MESH_AXES, shape))))
        state_sh = state_shardings(cfg, tx, mesh)
        batch_sh = {"tokens": sharding.batch_sharding(mesh, 2), "cond": sharding.batch_sharding(mesh, 1)}
        step = jax.jit(functools.partial(train_step, cfg=cfg, tx=tx, seed=0, label_dropout=0.1),
                       in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, sharding.replicated(mesh)),
                       donate_argnums=0)
        batch = {"tokens": jax.ShapeDtypeStruct((args.batch, cfg.seq_len), jnp.int32),
                 "cond": jax.ShapeDtypeStruct((args.batch,), jnp.int32)}
        mem = step.lower(abstract, batch).compile().memory_analysis()
        gib = lambda b: b / 2**30
        rows.append({"mesh": name, "shape": shape, "arguments_gib": gib(mem.argument_size_in_bytes),
                     "temporaries_gib": gib(mem.temp_size_in_bytes), "outputs_gib": gib(mem.output_size_in_bytes),
                     "total_gib": gib(mem.argument_size_in_bytes + mem.temp_size_in_bytes)})
    print(f"GPT-B-sized train step ({n_params / 1e6:.0f} M parameters, float32, AdamW), global batch {args.batch} x "
          f"{cfg.seq_len} tokens, per device of 8 (compiled memory analysis)")
    print(f"{'mesh':36s} {'params+opt+batch GiB':>21s} {'temporaries GiB':>16s} {'total GiB':>10s}")
    for r in rows:
        print(f"{r['mesh']:36s} {r['arguments_gib']:21.3f} {r['temporaries_gib']:16.3f} {r['total_gib']:10.3f}")
    print(json.dumps({"params_m": n_params / 1e6, "batch": args.batch, "rows": rows}))


if __name__ == "__main__":
    main()
