"""The VQ-16 decoder's 3x3 convolutions at batch 8: `lax.conv` against `winograd.conv3x3`, timed alternately.

    python benchmarks/winograd_convs.py [--repeats 5]

One row per (resolution, channels) of LlamaGen's VQ-16 decoder (ch 128, ch_mult 1,1,2,2,4: 16x16 codes ->
256x256): the median seconds of each after a warm-up, the two alternated so the machine's drift falls on both,
their ratio, and Winograd's largest difference from the direct convolution relative to its largest output. Both
compile as the VQ model's functions do (`compile_options.cpu_jit`: Eigen, not YNNPACK, runs products and
convolutions; the faster of the two for both here). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from ar_jax.compile_options import cpu_jit
from ar_jax.tokenizers import winograd

SHAPES = [(256, 128), (128, 256), (64, 256), (32, 512), (16, 512)]  # (side, channels in = out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    if not winograd.applies(jnp.zeros((1, 1, 1, 1)), jnp.zeros((3, 3, 1, 1))):
        raise SystemExit("Winograd's path is off here (not a CPU, AR_JAX_NATIVE_KERNELS=0 or no C++ compiler).")
    direct, wino = cpu_jit(winograd.direct), cpu_jit(winograd.conv3x3)
    rows = []
    for side, ch in SHAPES:
        kx, kk = jax.random.split(jax.random.key(side))
        x = jax.random.normal(kx, (args.batch, side, side, ch))
        k = jax.random.normal(kk, (3, 3, ch, ch)) / (3 * ch ** 0.5)
        b = jnp.zeros((ch,))
        want, got = direct(x, k, b).block_until_ready(), wino(x, k, b).block_until_ready()
        err = float(jnp.abs(got - want).max() / jnp.abs(want).max())
        times = {"direct": [], "winograd": []}
        for _ in range(args.repeats):
            for name, fn in (("direct", direct), ("winograd", wino)):
                t = time.perf_counter()
                fn(x, k, b).block_until_ready()
                times[name].append(time.perf_counter() - t)
        d, w = statistics.median(times["direct"]), statistics.median(times["winograd"])
        gflop = 2 * 9 * args.batch * side * side * ch * ch / 1e9
        rows.append({"side": side, "channels": ch, "direct_s": d, "winograd_s": w, "ratio": d / w,
                     "direct_gflop_s": gflop / d, "relative_error": err})
        print(f"{side:4d}x{side:<4d} {ch:4d} ch  direct {d:7.3f} s ({gflop / d:5.0f} GFLOP/s)  winograd {w:7.3f} s  "
              f"{d / w:5.2f}x  max diff {err:.1e} of the largest output", flush=True)
    print(json.dumps({"batch": args.batch, "repeats": args.repeats, "rows": rows}))


if __name__ == "__main__":
    main()
