"""How fast one decoding step's attention reads a GPT-B-shaped cache: the native kernel against XLA's blocks.

    python benchmarks/decode_attention.py [--batch 8] [--written 128,256] [--repeats 7]

Twelve layers' float32 caches `[2B, 12 heads, 256, 64]` (batch B with CFG: 2B rows; 300 MB at B = 8), of which the
first `written` entries count. Inside a `fori_loop` of 16 steps (as the sampler's scan runs them), every layer's
attention for one new position, two ways: `ar_jax.kernels.decode_attention` (what decoding uses on CPU) and
`transformer.written_attention` (XLA, by 64-entry blocks). Each figure is the median of --repeats timed calls, per
step, with the key and value bytes read a step divided by it. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from ar_jax import kernels
from ar_jax.models.transformer import written_attention

LAYERS, HEADS, M, D, STEPS = 12, 12, 256, 64, 16


def native(q: jax.Array, k: jax.Array, v: jax.Array, n: jax.Array) -> jax.Array:
    return kernels.decode_attention(q, k, v, n, D ** -0.5)


def xla_blocks(q: jax.Array, k: jax.Array, v: jax.Array, n: jax.Array) -> jax.Array:
    B = q.shape[0]
    return written_attention(q.reshape(B, 1, HEADS, D), k, v, n, D ** -0.5).reshape(q.shape)


def ms_per_step(attend, q: jax.Array, caches: list, written: int, repeats: int) -> float:
    @jax.jit
    def run(q, caches, n):
        def body(_, acc):
            for k, v in caches:
                acc = acc + attend(q + acc, k, v, n)
            return acc
        return jax.lax.fori_loop(0, STEPS, body, jnp.zeros_like(q))

    n = jnp.int32(written)
    run(q, caches, n).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run(q, caches, n).block_until_ready()
        times.append(time.perf_counter() - t)
    return statistics.median(times) / STEPS * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--written", default="128,256")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rows = 2 * args.batch
    keys = iter(jax.random.split(jax.random.key(0), 2 * LAYERS + 1))
    q = jax.random.normal(next(keys), (rows, HEADS, 1, D))
    caches = [(jax.random.normal(next(keys), (rows, HEADS, M, D)), jax.random.normal(next(keys), (rows, HEADS, M, D)))
              for _ in range(LAYERS)]
    ways = {"native": native} if kernels.available() else {}
    ways["xla_blocks"] = xla_blocks
    print(f"device: {jax.devices()[0].platform}, {rows} rows, {LAYERS} layers, cache of {M} entries, "
          f"{STEPS} loop steps a call")
    print(f"{'written':>7} " + " ".join(f"{w + ' ms':>15} {'GB/s':>6}" for w in ways))
    out = {}
    for written in (int(n) for n in args.written.split(",")):
        nbytes = LAYERS * 2 * rows * HEADS * written * D * 4  # keys and values read a step
        res = {w: ms_per_step(f, q, caches, written, args.repeats) for w, f in ways.items()}
        out[written] = {f"{w}_ms": t for w, t in res.items()} | {f"{w}_gb_s": nbytes / t / 1e6 for w, t in res.items()}
        print(f"{written:>7} " + " ".join(f"{t:>15.2f} {nbytes / t / 1e6:>6.1f}" for t in res.values()))
    print(json.dumps({"rows": rows, "written": out}))


if __name__ == "__main__":
    main()
