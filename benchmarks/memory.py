"""Per-device memory of the train step of LlamaGen's GPT sizes on 8, 64 and 256 devices: FSDP and FSDP x tensor, with
and without remat; what fits a 16 GiB and an 80 GiB accelerator.

    python benchmarks/memory.py [--models GPT-B,GPT-L,GPT-XL,GPT-XXL,GPT-3B] [--seq_lens 256,576]
        [--devices 8,64,256] [--per_replica_batch 2] [--tensor 4] [--remat none,full]

No accelerator is needed: the script forces as many CPU devices as the largest mesh (set here, before JAX starts),
lowers the jitted train step on abstract arrays (`jax.jit(...).lower(...)`, the activations' logical layout in
context as the trainer has it) and reads the compiled program's memory analysis: arguments (fp32 parameters, AdamW
moments, the batch) plus temporaries (activations, gradients, workspace), per device. The model is scanned over its
layers (`scan_layers`), so compiling a 48-layer model costs what a 1-layer one does. The step is LlamaGen's:
bf16 compute with fp32 master weights and fp32 logits/loss, AdamW, dropout 0.1, class dropout 0.1. Each
data-parallel replica (`data x fsdp` devices; tensor devices share their replica's rows) holds `per_replica_batch`
sequences. The sizes are XLA:CPU's buffer assignment of the same partitioned program; an accelerator's compiler
fuses and schedules differently, so read them as estimates (temporaries most of all) and keep headroom.
"""

from __future__ import annotations

import argparse
import os

MODELS = ("GPT-B", "GPT-L", "GPT-XL", "GPT-XXL", "GPT-3B")  # LlamaGen's c2i sizes (ar_jax.convert.llamagen presets)
GIB = 2**30
FITS = (16, 80)  # accelerator memories marked in the table, GiB


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    csv = lambda kind: lambda s: tuple(kind(x) for x in s.split(","))  # noqa: E731
    parser.add_argument("--models", type=csv(str), default=MODELS)
    parser.add_argument("--seq_lens", type=csv(int), default=(256, 576), help="image tokens (16x16, 24x24 grids)")
    parser.add_argument("--devices", type=csv(int), default=(8, 64, 256))
    parser.add_argument("--per_replica_batch", type=int, default=2, help="sequences per data-parallel replica")
    parser.add_argument("--tensor", type=int, default=4, help="tensor-parallel size of the FSDP x tensor meshes")
    parser.add_argument("--remat", type=csv(str), default=("none", "full"), help="model.remat settings")
    return parser.parse_args()


ARGS = parse() if __name__ == "__main__" else None
if ARGS is not None:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={max(ARGS.devices)}")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import functools  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import optax  # noqa: E402

from ar_jax import sharding  # noqa: E402
from ar_jax.convert import llamagen  # noqa: E402
from ar_jax.models.transformer import TransformerConfig  # noqa: E402
from ar_jax.training.state import init_state, state_shardings  # noqa: E402
from ar_jax.training.steps import train_step  # noqa: E402

# Only the buffer assignment is read, which XLA's HLO passes decide: the CPU code generator runs without its expensive
# LLVM passes (the same bytes, checked on GPT-B at 576 tokens on 8 devices, in half the compile time).
jax.config.update("jax_disable_most_optimizations", True)


def model_config(name: str, seq_len: int, remat: str) -> TransformerConfig:
    """LlamaGen's c2i GPT `name` over `seq_len` tokens as it trains: bf16 compute, dropout 0.1, scanned layers."""
    cfg = llamagen.gpt_config(llamagen.gpt_args(name, block_size=seq_len))
    return cfg.replace(dtype="bfloat16", token_dropout=0.1, resid_dropout=0.1, ffn_dropout=0.1, scan_layers=True,
                       remat=remat)


def meshes(n: int, tensor: int) -> dict[str, tuple[int, int, int]]:
    """(data, fsdp, tensor) of the two layouts on `n` devices."""
    return {"fsdp": (1, n, 1), f"fsdp x tensor{tensor}": (1, n // tensor, tensor)}


def measure(cfg: TransformerConfig, shape: tuple[int, int, int], per_replica_batch: int) -> dict:
    """Per-device bytes of the compiled train step of `cfg` on a mesh of `shape` (the first devices)."""
    n = shape[0] * shape[1] * shape[2]
    mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(zip(sharding.MESH_AXES, shape))), jax.devices()[:n])
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.05))
    state_sh = state_shardings(cfg, tx, mesh)
    abstract = jax.eval_shape(functools.partial(init_state, cfg, tx), jax.random.key(0))
    B = per_replica_batch * sharding.data_parallel_size(mesh)
    batch_sh = {"tokens": sharding.batch_sharding(mesh, 2), "cond": sharding.batch_sharding(mesh, 1)}
    batch = {"tokens": jax.ShapeDtypeStruct((B, cfg.seq_len), jnp.int32),
             "cond": jax.ShapeDtypeStruct((B,), jnp.int32)}
    step = jax.jit(functools.partial(train_step, cfg=cfg, tx=tx, seed=0, label_dropout=0.1),
                   in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, sharding.replicated(mesh)),
                   donate_argnums=0)
    t0 = time.perf_counter()
    with jax.set_mesh(mesh):
        mem = step.lower(abstract, batch).compile().memory_analysis()
    args, temps = mem.argument_size_in_bytes, mem.temp_size_in_bytes
    return {"arguments_gib": args / GIB, "temporaries_gib": temps / GIB, "total_gib": (args + temps) / GIB,
            "global_batch": B, "compile_s": time.perf_counter() - t0}


def fits(total_gib: float) -> str:
    return next((str(g) for g in FITS if total_gib <= g), "--")


def table(rows: list[dict], per_replica_batch: int) -> str:
    """One line per model, length and device count; per layout and remat setting the total GiB per device and the
    smallest marked accelerator it fits; the per-device state (weights, AdamW moments, batch) of each layout."""
    cols = list(dict.fromkeys((r["mesh"], r["remat"]) for r in rows))
    layouts = list(dict.fromkeys(r["mesh"] for r in rows))
    groups: dict[tuple, dict] = {}
    for r in rows:
        groups.setdefault((r["model"], r["seq_len"], r["devices"]), {})[(r["mesh"], r["remat"])] = r
    short = lambda m: m.replace("tensor", "t")  # noqa: E731
    lines = ["Train step memory per device, GiB (XLA memory analysis of the compiled step on forced CPU devices):",
             f"LlamaGen c2i GPTs, bf16 compute, fp32 weights + AdamW, {per_replica_batch} sequences per data-parallel "
             f"replica, scanned layers.",
             f"Columns: layout, remat; after each total the smallest of {'/'.join(map(str, FITS))} GiB it fits "
             "('--': neither). state: weights + AdamW moments + batch.",
             f"{'model':8s} {'params':>6s} {'tokens':>6s} {'devices':>7s} "
             + " ".join(f"{short(m) + ', ' + rm:>15s}" for m, rm in cols)
             + " " + " ".join(f"{'state ' + short(m):>15s}" for m in layouts)]
    order = {m: i for i, m in enumerate(MODELS)}
    for (model, seq_len, n), g in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1:])):
        any_row = next(iter(g.values()))
        cells = [f"{g[c]['total_gib']:12.2f} {fits(g[c]['total_gib']):>2s}" if c in g else f"{'':15s}" for c in cols]
        state = [f"{next(r for (m, _), r in g.items() if m == lay)['arguments_gib']:15.2f}" for lay in layouts]
        lines.append(f"{model:8s} {any_row['params_m']:5.0f}M {seq_len:6d} {n:7d} " + " ".join(cells) + " "
                     + " ".join(state))
    return "\n".join(lines)


def main() -> None:
    a = ARGS
    unknown = set(a.models) - set(llamagen.GPT_PRESETS)
    if unknown:
        raise SystemExit(f"--models {sorted(unknown)} are not LlamaGen presets; use some of "
                         f"{list(llamagen.GPT_PRESETS)}.")
    rows = []
    for n in a.devices:
        for name in a.models:
            for seq_len in a.seq_lens:
                for remat in a.remat:
                    cfg = model_config(name, seq_len, remat)
                    n_params = sum(x.size for x in jax.tree.leaves(jax.eval_shape(lambda r, c=cfg: c.init(r)[0],
                                                                                  jax.random.key(0))))
                    for layout, shape in meshes(n, a.tensor).items():
                        row = {"model": name, "params_m": n_params / 1e6, "seq_len": seq_len, "devices": n,
                               "mesh": layout, "shape": shape, "remat": remat,
                               **measure(cfg, shape, a.per_replica_batch)}
                        row["fits"] = fits(row["total_gib"])
                        rows.append(row)
                        print(f"  {name} {seq_len} tokens, {n} devices, {layout}, remat={remat}: "
                              f"{row['total_gib']:.2f} GiB ({row['compile_s']:.0f} s to compile)", flush=True)
    print(table(rows, a.per_replica_batch))
    print(json.dumps({"per_replica_batch": a.per_replica_batch, "dtype": "bfloat16 compute, float32 weights",
                      "rows": rows}))


if __name__ == "__main__":
    main()
