"""Speed of GPT-B-shaped generation and training, and VQ-16-shaped decoding, beside LlamaGen's figures.

    python benchmarks/speed.py                 # every benchmark, each in its own process (peak memory apart)
    python benchmarks/speed.py --only generate_b1 --json
    python benchmarks/speed.py --dtype bfloat16

Random-initialised LlamaGen GPT-B shape (12 layers, 12 heads, dim 768, vocab 16384, 256 tokens, 1000 classes)
in float32 unless --dtype says otherwise. Each figure is the median of --repeats timed runs after one warm-up
run; the warm-up's extra time is reported as compile time. LlamaGen's figures are from
../shared/peers/llamagen.md (PyTorch 2.13 CPU, 2 threads, same machine kind); the ratio is theirs / ours.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

LLAMAGEN_S = {"generate_b1": 23.9, "generate_b8": 74.5, "train_step_b8": 27.1, "vq_decode_b8": 35.3}
NAMES = list(LLAMAGEN_S)


def gpt_b(dtype: str):
    from ar_jax.models.transformer import TransformerConfig

    return TransformerConfig(vocab_size=16384, seq_len=256, num_classes=1000, dim=768, num_layers=12, num_heads=12,
                             multiple_of=256, rope="2d", dtype=dtype)


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median seconds, warm-up seconds minus median) of `fn()`, which must block until done."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return med, max(first - med, 0.0)


def bench_generate(batch: int, dtype: str, repeats: int) -> dict:
    from ar_jax.models.transformer import init_params
    from ar_jax.sampling import generate

    cfg = gpt_b(dtype)
    params, _ = init_params(cfg, jax.random.key(0))
    params = jax.tree.map(lambda p: p.astype(dtype), params) if dtype != "float32" else params
    labels = np.arange(batch, dtype=np.int32) * 7 % 1000
    seeds = iter(range(1000))
    run = lambda: jax.block_until_ready(generate(params, cfg, labels, jax.random.key(next(seeds)), cfg_scale=4.0,
                                                 top_k=2000, temperature=1.0))
    med, compile_s = timed(run, repeats)
    return {"median_s": med, "compile_s": compile_s, "tokens_per_s": batch * cfg.seq_len / med,
            "images_per_s": batch / med}


def bench_train(batch: int, dtype: str, repeats: int) -> dict:
    import functools

    import ml_collections
    import optax

    from ar_jax.training.state import init_state
    from ar_jax.training.steps import train_step

    cfg = gpt_b(dtype)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.05))
    state = init_state(cfg, tx, jax.random.key(0))
    step = jax.jit(functools.partial(train_step, cfg=cfg, tx=tx, seed=0, label_dropout=0.1), donate_argnums=0)
    rng = np.random.default_rng(0)
    batch_ = {"tokens": jnp.asarray(rng.integers(0, cfg.vocab_size, (batch, cfg.seq_len)), jnp.int32),
              "labels": jnp.asarray(rng.integers(0, 1000, (batch,)), jnp.int32)}
    holder = [state]

    def run():
        holder[0], m = step(holder[0], batch_)
        jax.block_until_ready(m["loss"])

    del ml_collections
    med, compile_s = timed(run, repeats)
    return {"median_s": med, "compile_s": compile_s, "tokens_per_s": batch * cfg.seq_len / med}


def bench_vq_decode(batch: int, dtype: str, repeats: int) -> dict:
    from ar_jax.tokenizers import vq

    cfg = vq.VQConfig(codebook_size=16384, codebook_embed_dim=8, codebook_l2_norm=True, ch=128,
                      ch_mult=(1, 1, 2, 2, 4), z_channels=256, num_res_blocks=2)
    params = vq.init_params(cfg, jax.random.key(0), image_size=256)
    codes = jnp.asarray(np.random.default_rng(0).integers(0, 16384, (batch, 16, 16)), jnp.int32)
    decode = jax.jit(lambda p, c: vq.decode_codes(p, cfg, c))
    run = lambda: jax.block_until_ready(decode(params, codes))
    med, compile_s = timed(run, repeats)
    return {"median_s": med, "compile_s": compile_s, "images_per_s": batch / med}


def run_one(name: str, dtype: str, repeats: int) -> dict:
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
    parser.add_argument("--only", choices=NAMES)
    parser.add_argument("--json", action="store_true", help="one JSON object a line")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.only:
        rows = [run_one(args.only, args.dtype, args.repeats)]
    else:
        rows = []
        for name in NAMES:
            proc = subprocess.run([sys.executable, __file__, "--only", name, "--json", "--dtype", args.dtype,
                                   "--repeats", str(args.repeats)], capture_output=True, text=True)
            if proc.returncode:
                print(f"{name} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return
    print(f"device: {rows[0]['device'] if rows else '?'}, dtype {args.dtype}, median of {args.repeats} after warm-up")
    print(f"{'benchmark':16s} {'median s':>9s} {'compile s':>9s} {'tokens/s':>9s} {'images/s':>9s} "
          f"{'peak GiB':>8s} {'LlamaGen s':>10s} {'speed-up':>8s}")
    for r in rows:
        print(f"{r['name']:16s} {r['median_s']:9.2f} {r['compile_s']:9.1f} {r.get('tokens_per_s', float('nan')):9.1f} "
              f"{r.get('images_per_s', float('nan')):9.3f} {r['peak_rss_gib']:8.2f} {r['llamagen_s']:10.1f} "
              f"{r['speedup_vs_llamagen']:7.1f}x")


if __name__ == "__main__":
    main()
