"""Decoding speed on one CPU core against all of them, by model size and batch: what `ar_jax.backends.cpu.cores`'s
automatic choice (`--cpu_cores auto`) rests on.

    python benchmarks/cpu_cores.py [--shapes scenes,medium,gpt_b] [--batches 1,8,32] [--repeats 5]

Random-initialised class-conditional transformers (weights do not change a fixed-length decode's time): "scenes"
(configs/scenes_t2i.py's shape: dim 128, 6 layers, 256 codes, 64 tokens), "medium" (dim 384, 8 layers, 1024 codes,
256 tokens) and "gpt_b" (LlamaGen's GPT-B: dim 768, 12 layers, 16384 codes, 256 tokens). Plain decoding with CFG 4 and
top-k (as LlamaGen samples), tokens per second, the median of --repeats calls after a warm-up; every (shape, batch,
cores) in a process of its own, since the cores are chosen before JAX starts. Prints a table and one JSON line;
`work` is parameters x rows a step (CFG doubles the rows), the quantity `auto_cores` thresholds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

SHAPES = {"scenes": dict(dim=128, num_layers=6, num_heads=4, num_kv_heads=2, mlp_dim=384, vocab_size=256, seq_len=64,
                         num_classes=10, top_k=8),
          "medium": dict(dim=384, num_layers=8, num_heads=6, vocab_size=1024, seq_len=256, num_classes=100, top_k=100),
          "gpt_b": dict(dim=768, num_layers=12, num_heads=12, vocab_size=16384, seq_len=256, num_classes=1000,
                        top_k=2000)}


def one(shape: str, batch: int, cores: str, repeats: int) -> dict:
    """Tokens/s of plain decoding of `shape` at `batch` on `cores` (run in its own process: the cores come first)."""
    from ar_jax.backends.cpu import cores as cpu_cores

    used = cpu_cores.use_cores(cpu_cores.parse(cores))
    import jax
    import numpy as np
    from timing import timed

    from ar_jax.decode.sampling import generate
    from ar_jax.models.transformer import TransformerConfig, init_params

    kw = dict(SHAPES[shape])
    top_k = kw.pop("top_k")
    cfg = TransformerConfig(**kw)
    params, _ = init_params(cfg, jax.random.key(0))
    n = sum(x.size for x in jax.tree.leaves(params))
    dec_cfg, dec_params = cfg.decoding(params)
    labels = np.arange(batch, dtype=np.int32) % cfg.num_classes
    seeds = iter(range(1000))
    med, compile_s = timed(lambda: jax.block_until_ready(generate(
        dec_params, dec_cfg, labels, jax.random.key(next(seeds)), cfg_scale=4.0, top_k=top_k)), repeats)
    return {"shape": shape, "batch": batch, "cores": len(used), "params": n, "work": n * 2 * batch,
            "tokens_per_s": batch * cfg.seq_len / med, "median_s": med, "compile_s": compile_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="scenes,medium,gpt_b")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # shape,batch,cores: a child process
    args = parser.parse_args()
    if args.one:
        shape, batch, cores = args.one.split(",")
        print(json.dumps(one(shape, int(batch), cores, args.repeats)))
        return
    from timing import cpu

    shapes, batches = args.shapes.split(","), [int(b) for b in args.batches.split(",")]
    if set(shapes) - set(SHAPES) or args.repeats < 3:
        raise ValueError(f"--shapes={args.shapes!r} must name some of {', '.join(SHAPES)}; --repeats >= 3.")
    rows = []
    print(f"{cpu()}\n{'shape':8s} {'batch':>5s} {'work':>9s} {'1 core tok/s':>13s} {'all tok/s':>10s} {'1 / all':>8s}")
    for shape in shapes:
        for batch in batches:
            got = {}
            for cores in ("1", "all"):
                out = subprocess.run([sys.executable, __file__, "--one", f"{shape},{batch},{cores}", "--repeats",
                                      str(args.repeats)], capture_output=True, text=True)
                if out.returncode:
                    raise RuntimeError(f"{shape} batch {batch} cores {cores} failed:\n{out.stderr[-2000:]}")
                got[cores] = json.loads(out.stdout.strip().splitlines()[-1])
            r = {"shape": shape, "batch": batch, "work": got["1"]["work"], "all_cores": got["all"]["cores"],
                 "one_core_tokens_per_s": got["1"]["tokens_per_s"],
                 "all_cores_tokens_per_s": got["all"]["tokens_per_s"]}
            r["ratio"] = r["one_core_tokens_per_s"] / r["all_cores_tokens_per_s"]
            rows.append(r)
            print(f"{shape:8s} {batch:5d} {r['work']:9.2e} {r['one_core_tokens_per_s']:13.1f} "
                  f"{r['all_cores_tokens_per_s']:10.1f} {r['ratio']:7.2f}x")
    print(json.dumps({"machine": cpu(), "repeats": args.repeats, "rows": rows}))


if __name__ == "__main__":
    main()
