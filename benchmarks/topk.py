"""Top-k threshold on CPU: `lax.top_k` vs the exact float-bit bisection in `ar_jax.processors.kth_largest`.

    python benchmarks/topk.py [--rows 8] [--vocab 16384] [--k 2000] [--repeats 7]

The sampler needs only the k-th largest logit per row; this measures both ways in one run (median of repeats
after a warm-up) and prints the ratio, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np

from ar_jax.processors import kth_largest


def median_ms(fn, x, repeats: int, inner: int = 20) -> float:
    fn(x).block_until_ready()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            r = fn(x)
        r.block_until_ready()
        out.append((time.perf_counter() - t0) / inner * 1e3)
    return statistics.median(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=16384)
    parser.add_argument("--k", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    x = jax.random.normal(jax.random.key(0), (args.rows, args.vocab))
    top_k = jax.jit(lambda x: jax.lax.top_k(x, args.k)[0][:, -1:])
    bisect = jax.jit(lambda x: kth_largest(x, args.k))
    assert np.array_equal(np.asarray(top_k(x)), np.asarray(bisect(x)))
    a, b = median_ms(top_k, x, args.repeats), median_ms(bisect, x, args.repeats)
    print(f"k-th largest of [{args.rows}, {args.vocab}], k={args.k}, {jax.devices()[0].device_kind}, "
          f"median of {args.repeats}")
    print(f"{'lax.top_k':12s} {a:8.2f} ms\n{'bisection':12s} {b:8.2f} ms\n{'ratio':12s} {a / b:8.1f}x")
    print(json.dumps({"lax_top_k_ms": a, "bisection_ms": b, "ratio": a / b, **vars(args)}))


if __name__ == "__main__":
    main()
