"""Speed of GPT-B-shaped generation and training, and VQ-16-shaped decoding, beside LlamaGen's figures.

    python benchmarks/speed.py                 # every benchmark, each in its own process (peak memory apart)
    python benchmarks/speed.py --only generate_b1 --json
    python benchmarks/speed.py --dtype bfloat16

Random-initialised LlamaGen GPT-B shape (12 layers, 12 heads, dim 768, vocab 16384, 256 tokens, 1000 classes) in
float32 unless --dtype says otherwise. Each figure is the median of --repeats timed runs after one warm-up run; the
warm-up's extra time is reported as compile time. Generation first puts the weights in the layout decoding reads
(`cfg.decoding(params)`: the backend's `prepare`, what `ar_jax.load`'s pipeline does once per model); that one-time
move is reported apart too (`layout_s` in the JSON). The LlamaGen column is the figure of
../shared/peers/llamagen.md (PyTorch 2.13 CPU, 2 threads, another machine of this kind, not this one); the ratio is
that figure / ours. For a ratio measured here, in one sitting, run `benchmarks/versus_llamagen.py` (LlamaGen's own
code, alternated with this script); the README shows how far the two differ on this box.
The run also measures this machine (`machine`: memory read rate and float32 matmul rate) and prints a floor beside
each figure: the time at those rates (every weight read once per generated token; XLA's FLOP count at the matmul
rate). The floor is what the hardware allows, not what XLA:CPU's kernels reach: at 4-16 rows a product
runs far below the read rate (docs/performance.md). The VQ decode's FLOP count is of what it runs: on CPU
its 3x3 convolutions are Winograd's (`ar_jax/backends/cpu/winograd.py`), whose products are a quarter of a direct
convolution's arithmetic, and whose transforms (native kernels) XLA does not count.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from timing import cpu, each_in_own_process, timed

LLAMAGEN_S = {"generate_b1": 23.9, "generate_b8": 74.5, "train_step_b8": 27.1, "vq_decode_b8": 35.3}
NAMES = list(LLAMAGEN_S)
MACHINE = "machine"  # this machine's memory read rate and float32 matmul rate, for the floor column


def gpt_b(dtype: str):
    from ar_jax.models.transformer import TransformerConfig

    return TransformerConfig(vocab_size=16384, seq_len=256, num_classes=1000, dim=768, num_layers=12, num_heads=12,
                             multiple_of=256, rope="2d", dtype=dtype)


def vq_16():
    """LlamaGen's VQ-16 shape (16x16 codes -> 256x256 images), random-initialisable."""
    from ar_jax.tokenizers import vq

    return vq.VQConfig(codebook_size=16384, codebook_embed_dim=8, codebook_l2_norm=True, ch=128,
                       ch_mult=(1, 1, 2, 2, 4), z_channels=256, num_res_blocks=2)


def bench_machine(repeats: int) -> dict:
    """Read rate (a jitted sum over 1 GiB) and float32 matmul rate (jitted 4096^3, and NumPy's BLAS) here."""
    big = [jnp.ones((2**28,), jnp.float32)]
    total = jax.jit(jnp.sum)
    read_s, _ = timed(lambda: jax.block_until_ready(total(big[0])), repeats)
    big.clear()
    n = 4096
    a = jnp.ones((n, n), jnp.float32)
    mm = jax.jit(jnp.dot)
    mm_s, _ = timed(lambda: jax.block_until_ready(mm(a, a)), repeats)
    an = np.ones((n, n), np.float32)
    np_s, _ = timed(lambda: an @ an, repeats)
    out = {"median_s": mm_s, "compile_s": 0.0, "read_gb_s": 2**30 / read_s / 1e9,
           "matmul_gflop_s": 2 * n**3 / mm_s / 1e9, "numpy_matmul_gflop_s": 2 * n**3 / np_s / 1e9}
    from ar_jax.models.transformer import prepare

    # 403 MB of 768 -> 16384 weights, as decoding reads them here (`prepare`: on CPU panels or [out, in] copies)
    dec = prepare({f"w{i}": {"output": jnp.full((768, 16384), i, jnp.float32)} for i in range(8)})
    be, weights = dec.backend, [dec.params[f"w{i}"]["output"] for i in range(8)]
    products = jax.jit(lambda x, ws: [be.dense(x, w, 1, (16384,)) for w in ws])
    for rows in (1, 2, 16):
        x = jnp.ones((rows, 768), jnp.float32)
        s, _ = timed(lambda x=x: jax.block_until_ready(products(x, weights)), repeats)
        out[f"product_{rows}rows_gb_s"] = 8 * weights[0].nbytes / s / 1e9  # weight bytes read per second
    return out


def flops_of(fn, *args) -> float:
    """XLA's FLOP count of the compiled `fn(*args)` (`fn` jitted already, or not)."""
    cost = (fn if hasattr(fn, "lower") else jax.jit(fn)).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan")))


def bench_generate(batch: int, dtype: str, repeats: int) -> dict:
    from ar_jax.decode.sampling import generate
    from ar_jax.models.transformer import init_params

    cfg = gpt_b(dtype)
    params, _ = init_params(cfg, jax.random.key(0))
    params = jax.tree.map(lambda p: p.astype(dtype), params) if dtype != "float32" else params
    labels = np.arange(batch, dtype=np.int32) * 7 % 1000
    seeds = iter(range(1000))
    t0 = time.perf_counter()
    dec_cfg, dec_params = cfg.decoding(params)  # once per model, as ar_jax.load's pipeline does (the backend's layout)
    jax.block_until_ready(dec_params)
    layout_s = time.perf_counter() - t0
    run = lambda: jax.block_until_ready(generate(dec_params, dec_cfg, labels, jax.random.key(next(seeds)),
                                                 cfg_scale=4.0, top_k=2000, temperature=1.0))
    med, compile_s = timed(run, repeats)
    read = sum(x.size for name, tree in params.items() if name not in ("tok_embeddings", "cls_embedding")
               for x in jax.tree.leaves(tree))  # weights read whole each step (an embedding: one row)
    rows = 2 * batch  # CFG: conditional and unconditional rows
    return {"median_s": med, "compile_s": compile_s, "layout_s": layout_s,
            "tokens_per_s": batch * cfg.seq_len / med,
            "images_per_s": batch / med, "decode_steps": cfg.seq_len,
            "weight_bytes_per_step": read * jnp.dtype(dtype).itemsize, "flops": 2.0 * read * rows * cfg.seq_len}


def bench_train(batch: int, dtype: str, repeats: int) -> dict:
    import functools

    import ml_collections
    import optax

    from ar_jax import backends
    from ar_jax.training.state import init_state
    from ar_jax.training.steps import train_step

    cfg = gpt_b(dtype)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.05))
    state = init_state(cfg, tx, jax.random.key(0))
    backend = backends.for_devices(jax.devices()[:1])  # as train.py chooses it on one device
    step = jax.jit(functools.partial(train_step, cfg=cfg, tx=tx, seed=0, label_dropout=0.1, backend=backend),
                   donate_argnums=0)
    rng = np.random.default_rng(0)
    batch_ = {"tokens": jnp.asarray(rng.integers(0, cfg.vocab_size, (batch, cfg.seq_len)), jnp.int32),
              "cond": jnp.asarray(rng.integers(0, 1000, (batch,)), jnp.int32)}
    holder = [state]

    def run():
        holder[0], m = step(holder[0], batch_)
        jax.block_until_ready(m["loss"])

    del ml_collections
    med, compile_s = timed(run, repeats)
    flops = flops_of(step, holder[0], batch_)
    return {"median_s": med, "compile_s": compile_s, "tokens_per_s": batch * cfg.seq_len / med, "flops": flops}


def bench_vq_decode(batch: int, dtype: str, repeats: int) -> dict:
    from ar_jax.tokenizers import vq

    cfg = vq_16()
    params = vq.init_params(cfg, jax.random.key(0), image_size=256)
    codes = jnp.asarray(np.random.default_rng(0).integers(0, 16384, (batch, 16, 16)), jnp.int32)
    run = lambda: jax.block_until_ready(vq.decode_codes(params, cfg, codes))  # the library's compiled decode
    med, compile_s = timed(run, repeats)
    flops = flops_of(lambda p, c: vq.decode_codes(p, cfg, c), params, codes)
    return {"median_s": med, "compile_s": compile_s, "images_per_s": batch / med, "flops": flops}


def run_one(name: str, dtype: str, repeats: int) -> dict:
    if name == MACHINE:
        return {"name": name, "repeats": repeats, **bench_machine(repeats), "device": str(jax.devices()[0].device_kind),
                "cpu": cpu()}
    fn = {"generate_b1": lambda: bench_generate(1, dtype, repeats),
          "generate_b8": lambda: bench_generate(8, dtype, repeats),
          "train_step_b8": lambda: bench_train(8, dtype, repeats),
          "vq_decode_b8": lambda: bench_vq_decode(8, dtype, repeats)}[name]
    out = {"name": name, "dtype": dtype, "repeats": repeats, **fn()}
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["llamagen_s"] = LLAMAGEN_S[name]
    out["speedup_vs_llamagen"] = LLAMAGEN_S[name] / out["median_s"]
    out["device"] = str(jax.devices()[0].device_kind)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=NAMES + [MACHINE])
    parser.add_argument("--json", action="store_true", help="one JSON object a line")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.only:
        rows = [run_one(args.only, args.dtype, args.repeats)]
    else:
        rows = each_in_own_process([MACHINE] + NAMES, lambda name: [
            sys.executable, __file__, "--only", name, "--json", "--dtype", args.dtype, "--repeats", str(args.repeats)])
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return
    machine = next((r for r in rows if r["name"] == MACHINE), None)
    rows = [r for r in rows if r["name"] != MACHINE]
    print(f"device: {rows[0]['device'] if rows else '?'}, dtype {args.dtype}, median of {args.repeats} after warm-up")
    if machine:
        print(f"cpu: {machine['cpu']}")
        print(f"this machine: {machine['read_gb_s']:.1f} GB/s memory read, {machine['matmul_gflop_s']:.0f} GFLOP/s "
              f"float32 matmul (XLA, 4096^3; NumPy's BLAS {machine['numpy_matmul_gflop_s']:.0f}); decoding's "
              f"products (the backend's dense) by 768->16384 weights read them at "
              f"{machine['product_1rows_gb_s']:.1f} / {machine['product_2rows_gb_s']:.1f} / "
              f"{machine['product_16rows_gb_s']:.1f} GB/s with 1 / 2 / 16 rows")
    print(f"{'benchmark':16s} {'median s':>9s} {'compile s':>9s} {'tokens/s':>9s} {'images/s':>9s} "
          f"{'peak GiB':>8s} {'floor s':>8s} {'file s':>7s} {'vs file':>8s}")
    for r in rows:
        print(f"{r['name']:16s} {r['median_s']:9.2f} {r['compile_s']:9.1f} {r.get('tokens_per_s', float('nan')):9.1f} "
              f"{r.get('images_per_s', float('nan')):9.3f} {r['peak_rss_gib']:8.2f} {floor_s(r, machine):8.2f} "
              f"{r['llamagen_s']:7.1f} {r['speedup_vs_llamagen']:7.1f}x")
    print("floor s: the time at this machine's measured rates: every weight read once a step for generation (or "
          "its FLOPs at the matmul rate, if more), XLA's FLOP count at the matmul rate for the others.")
    print("file s: LlamaGen's figure in ../shared/peers/llamagen.md, measured on another machine; for a ratio taken "
          "on this one, run benchmarks/versus_llamagen.py.")


def floor_s(row: dict, machine: dict | None) -> float:
    """Seconds `row` cannot beat at `machine`'s read and matmul rates (nan without a machine row)."""
    if machine is None:
        return float("nan")
    compute = row["flops"] / (machine["matmul_gflop_s"] * 1e9)
    if "weight_bytes_per_step" in row:
        return max(compute, row["decode_steps"] * row["weight_bytes_per_step"] / (machine["read_gb_s"] * 1e9))
    return compute

if __name__ == "__main__":
    main()
