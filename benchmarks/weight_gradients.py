"""How fast XLA:CPU computes a training step's weight gradients `x.T @ dy`, in the two forms it can be given.

    python benchmarks/weight_gradients.py [--repeats 9]

GPT-B's projections at batch 8 x 256 tokens (x `[2048, in]`, dy `[2048, out]`), float32: "folded" is what autodiff
of `jnp.dot(x, w)` leaves to XLA (the transpose folded into the product, both operands contracted along their first
dimension), "copy" multiplies a materialised `x.T` (what `transformer.cpu_dense` does; the copy's time is included).
Each figure is the median of --repeats timed calls, in GFLOP/s, with which kernel library ran the product (YNNPACK
or not, from the compiled HLO). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
from speed import timed

T = 2048
SHAPES = {"wq/wk/wv/wo 768x768": (768, 768), "w1/w3 768x2048": (768, 2048), "w2 2048x768": (2048, 768),
          "output 768x16384": (768, 16384)}
FORMS = {"folded": lambda x, dy: jnp.dot(x.T, dy),
         "copy": lambda x, dy: jnp.dot(jax.lax.optimization_barrier(x.T), dy)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"device: {jax.devices()[0].platform}, {T} tokens")
    print(f"{'weight':22s} {'folded GFLOP/s':>15s} {'ynn':>4s} {'copy GFLOP/s':>13s} {'ynn':>4s}")
    out = {}
    for name, (k, n) in SHAPES.items():
        x = jnp.asarray(rng.standard_normal((T, k), dtype=np.float32))
        dy = jnp.asarray(rng.standard_normal((T, n), dtype=np.float32))
        row = {}
        for form, f in FORMS.items():
            fn = jax.jit(f)
            ynn = "ynn" in fn.lower(x, dy).compile().as_text()
            med, _ = timed(functools.partial(lambda f, *a: jax.block_until_ready(f(*a)), fn, x, dy), args.repeats)
            row[form] = {"gflop_s": 2 * T * k * n / med / 1e9, "ynnpack": ynn}
        out[name] = row
        print(f"{name:22s} {row['folded']['gflop_s']:15.1f} {'yes' if row['folded']['ynnpack'] else 'no':>4s} "
              f"{row['copy']['gflop_s']:13.1f} {'yes' if row['copy']['ynnpack'] else 'no':>4s}")
    print(json.dumps({"tokens": T, "weights": out}))


if __name__ == "__main__":
    main()
