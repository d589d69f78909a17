"""What the CPU training paths are worth: speed.py's GPT-B train step with each switched off, timed in one process.

    python benchmarks/train_step_ab.py [--rounds 5]

Variants: "shipped", "plain weight gradients" (`transformer.cpu_dense` replaced by `jnp.dot`, so autodiff's
folded `x.T @ dy` runs where XLA puts it), "full attention" (`ATTENTION_BLOCK` above the sequence, so
`jax.nn.dot_product_attention` runs over all 256 positions), "plain cross-entropy" (`losses.token_nll` replaced by
autodiff through `log_softmax` and `take_along_axis`), and "none of them". All are compiled first, then timed in
alternating rounds (one step each a round), so the machine's drift falls on all alike; the figure is each one's
median over --rounds, beside its ratio to "none of them". Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from speed import gpt_b

import ar_jax.models.transformer as tr
from ar_jax.models import losses
from ar_jax.training.state import init_state
from ar_jax.training.steps import train_step

VARIANTS = {"shipped": (True, True, True), "plain weight gradients": (False, True, True),
            "full attention": (True, False, True), "plain cross-entropy": (True, True, False),
            "none of them": (False, False, False)}


def plain_dense(x: jax.Array, w: jax.Array, out_dtype) -> jax.Array:
    return jnp.dot(x, w, preferred_element_type=out_dtype)


def plain_nll(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cfg = gpt_b("float32")
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.05))
    rng = np.random.default_rng(0)
    batch = {"tokens": jnp.asarray(rng.integers(0, cfg.vocab_size, (8, cfg.seq_len)), jnp.int32),
             "labels": jnp.asarray(rng.integers(0, 1000, (8,)), jnp.int32)}
    shipped = (tr.cpu_dense, tr.ATTENTION_BLOCK, losses.token_nll)
    runs = {}
    for name, (dense, blocks, nll) in VARIANTS.items():
        tr.cpu_dense = shipped[0] if dense else plain_dense
        tr.ATTENTION_BLOCK = shipped[1] if blocks else 10 ** 9
        losses.token_nll = shipped[2] if nll else plain_nll
        step = jax.jit(functools.partial(train_step, cfg=cfg, tx=tx, seed=0, label_dropout=0.1), donate_argnums=0)
        state, m = step(init_state(cfg, tx, jax.random.key(0)), batch)  # traced and compiled with this variant
        jax.block_until_ready(m["loss"])
        runs[name] = [step, state, []]
    tr.cpu_dense, tr.ATTENTION_BLOCK, losses.token_nll = shipped
    for _ in range(args.rounds):
        for run in runs.values():
            t = time.perf_counter()
            run[1], m = run[0](run[1], batch)
            jax.block_until_ready(m["loss"])
            run[2].append(time.perf_counter() - t)
    med = {name: statistics.median(run[2]) for name, run in runs.items()}
    print(f"GPT-B train step, batch 8 x 256, float32, {jax.devices()[0].platform}, median of {args.rounds} "
          "alternating rounds")
    print(f"{'variant':24s} {'median s':>9s} {'vs none':>8s}  all rounds")
    for name, run in runs.items():
        print(f"{name:24s} {med[name]:9.2f} {med[name] / med['none of them']:8.3f}  "
              + " ".join(f"{t:.2f}" for t in run[2]))
    print(json.dumps({"rounds": args.rounds, "median_s": med}))


if __name__ == "__main__":
    main()
