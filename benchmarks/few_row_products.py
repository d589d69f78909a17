"""How fast XLA multiplies a few rows by GPT-B's layer weights: what bounds decoding on a CPU.

    python benchmarks/few_row_products.py [--rows 1,2,4,16] [--repeats 7]

Twelve GPT-B layers' projection weights (q, k, v, o 768x768; w1, w3 2048x768; w2 768x2048; 340 MB float32) in the
decode layout `[out, in]`, applied inside a `fori_loop` (as the sampler's scan does) to `rows` activation rows,
three ways: one product for all rows (`jnp.dot(w, x.T)`), one matrix-vector product per row (what
`transformer.project` does for 2 rows without the native kernel), and `ar_jax.kernels.rows_gemv` on the same
weights in panels of 16 outputs (`kernels.to_panels`; one pass over each weight for every 16 rows, what `project`
uses where the kernels are available). Each figure is the median of
--repeats timed calls of 16 loop steps, per step, with the weight bytes read once a step divided by it. Prints
a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from ar_jax import kernels

D, F, LAYERS, STEPS = 768, 2048, 12, 16
SHAPES = {"wq": (D, D), "wk": (D, D), "wv": (D, D), "wo": (D, D), "w1": (F, D), "w3": (F, D), "w2": (D, F)}


def one_product(w: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.dot(w, x.T).T


def per_row(w: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.stack([jnp.dot(w, x[r]) for r in range(x.shape[0])])


def panel_product(w: jax.Array, x: jax.Array) -> jax.Array:
    """The native kernel on `kernels.to_panels(w)` (every GPT-B output count is a multiple of 16)."""
    return kernels.rows_gemv(w, x, w.shape[0] * kernels.PANEL)


def layer(p: dict, x: jax.Array, mul) -> jax.Array:
    """A layer's products in the order a block runs them (attention mixing replaced by elementwise ops)."""
    q, k, v = mul(p["wq"], x), mul(p["wk"], x), mul(p["wv"], x)
    x = x + 1e-3 * mul(p["wo"], q * k + v)
    return x + 1e-3 * mul(p["w2"], jax.nn.silu(mul(p["w1"], x)) * mul(p["w3"], x))


def time_per_step(params: list, rows: int, mul, repeats: int) -> float:
    @jax.jit
    def run(params, x):
        def body(_, x):
            for p in params:
                x = layer(p, x, mul)
            return x
        return jax.lax.fori_loop(0, STEPS, body, x)

    x = jnp.asarray(np.random.default_rng(1).standard_normal((rows, D), dtype=np.float32))
    run(params, x).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run(params, x).block_until_ready()
        times.append(time.perf_counter() - t)
    return statistics.median(times) / STEPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,2,4,16")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    params = [{n: jnp.asarray(rng.standard_normal(s, dtype=np.float32) * 0.02) for n, s in SHAPES.items()}
              for _ in range(LAYERS)]
    nbytes = sum(x.size * 4 for p in params for x in p.values())
    print(f"device: {jax.devices()[0].platform}, {nbytes / 1e6:.0f} MB of weights, {STEPS} loop steps a call")
    native = kernels.available()
    panels = [{n: kernels.to_panels(w) for n, w in p.items()} for p in params] if native else None
    head = f"{'rows':>4} {'one product ms':>15} {'GB/s':>6} {'per row ms':>11} {'GB/s':>6}"
    print(head + (f" {'native ms':>10} {'GB/s':>6}" if native else ""))
    out = {}
    for rows in (int(r) for r in args.rows.split(",")):
        one = time_per_step(params, rows, one_product, args.repeats)
        each = time_per_step(params, rows, per_row, args.repeats)
        kern = time_per_step(panels, rows, panel_product, args.repeats) if native else None
        out[rows] = {"one_product_ms": one * 1e3, "per_row_ms": each * 1e3,
                     "one_product_gb_s": nbytes / one / 1e9, "per_row_gb_s": nbytes / each / 1e9,
                     "native_ms": None if kern is None else kern * 1e3,
                     "native_gb_s": None if kern is None else nbytes / kern / 1e9}
        r = out[rows]
        tail = "" if kern is None else f" {r['native_ms']:>10.2f} {r['native_gb_s']:>6.1f}"
        print(f"{rows:>4} {r['one_product_ms']:>15.2f} {r['one_product_gb_s']:>6.1f} {r['per_row_ms']:>11.2f} "
              f"{r['per_row_gb_s']:>6.1f}{tail}")
    print(json.dumps({"weight_bytes": nbytes, "rows": out}))


if __name__ == "__main__":
    main()
