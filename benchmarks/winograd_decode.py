"""speed.py's VQ-16 decode at batch 8, four ways in one process, timed alternately: what the Winograd path's choices
are worth.

    python benchmarks/winograd_decode.py [--rounds 4]

Variants: "shipped" (Winograd convolutions, the batch whole, compiled with Eigen as `compile_options.cpu_jit`
does), "chunks of 2" (`winograd.CHUNK_BYTES` set so the batch goes in `lax.map` chunks of 2 images), "lax.conv"
(`winograd.applies` false: the direct convolution) and "YNNPACK" (the shipped graph under XLA's default options).
Each is compiled first (module attributes are read while tracing), then timed once a round in alternating
rounds; the figure is each one's median, beside its ratio to "shipped". Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from speed import vq_16

from ar_jax.compile_options import EIGEN_CPU
from ar_jax.tokenizers import vq, winograd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    cfg = vq_16()
    params = vq.init_params(cfg, jax.random.key(0), image_size=256)
    codes = jnp.asarray(np.random.default_rng(0).integers(0, 16384, (8, 16, 16)), jnp.int32)
    per_image = 36 * 64 * 64 * 128 * 4  # bytes of one 256x256x128 image's transformed tiles
    shipped = (winograd.CHUNK_BYTES, winograd.applies)
    settings = {"shipped": (shipped[0], shipped[1], EIGEN_CPU), "chunks of 2": (2 * per_image, shipped[1], EIGEN_CPU),
                "lax.conv": (shipped[0], lambda x, k: False, EIGEN_CPU), "YNNPACK": (shipped[0], shipped[1], None)}
    runs, outputs = {}, {}
    for name, (chunk, applies, options) in settings.items():
        winograd.CHUNK_BYTES, winograd.applies = chunk, applies
        decode = lambda p, c: vq.VQModel(cfg).apply({"params": p}, c, method=vq.VQModel.decode_codes)  # no inner jit
        fn = jax.jit(decode, compiler_options=options)  # (an inner jit would keep its first trace for every variant)
        outputs[name] = np.asarray(fn(params, codes))  # compiles with the settings above
        runs[name] = fn
    winograd.CHUNK_BYTES, winograd.applies = shipped
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn(params, codes).block_until_ready()
            times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"VQ-16 decode, batch 8, 256x256, float32: median of {args.rounds} alternating rounds")
    for name in runs:
        diff = float(np.abs(outputs[name] - outputs["lax.conv"]).max())
        print(f"{name:12s} {med[name]:7.2f} s  {med[name] / med['shipped']:5.2f}x shipped's time  "
              f"max |difference| from lax.conv's images {diff:.1e}")
    print(json.dumps({"rounds": args.rounds, "median_s": med, "times_s": times}))


if __name__ == "__main__":
    main()
