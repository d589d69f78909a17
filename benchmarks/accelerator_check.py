"""The GPT-B benchmarks of `speed.py` with each training/prefill attention this machine's platform offers.

    python benchmarks/accelerator_check.py [--repeats 3]

Meant for a machine with a GPU or TPU (`ar_jax.backends`: "xla" everywhere, "cudnn" on GPU, "splash" on TPU); on a
CPU it runs the "xla" row only. Prints one row per (benchmark, attention) and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from timing import timed

from ar_jax import backends
from ar_jax.decode.sampling import generate
from ar_jax.models.transformer import TransformerConfig, init_params, prepare
from ar_jax.training.state import init_state
from ar_jax.training.steps import train_step


def gpt_b(dtype: str) -> TransformerConfig:
    return TransformerConfig(vocab_size=16384, seq_len=256, num_classes=1000, dim=768, num_layers=12, num_heads=12,
                             rope="2d", dtype=dtype)


def train_s(backend: backends.Backend, dtype: str, batch: int, repeats: int) -> float:
    cfg = gpt_b(dtype)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.05))
    holder = [init_state(cfg, tx, jax.random.key(0))]
    step = jax.jit(functools.partial(train_step, cfg=cfg, tx=tx, seed=0, label_dropout=0.1, backend=backend),
                   donate_argnums=0)
    rng = np.random.default_rng(0)
    batch_ = {"tokens": jnp.asarray(rng.integers(0, cfg.vocab_size, (batch, cfg.seq_len)), jnp.int32),
              "cond": jnp.asarray(rng.integers(0, 1000, (batch,)), jnp.int32)}

    def run():
        holder[0], m = step(holder[0], batch_)
        jax.block_until_ready(m["loss"])
    return timed(run, repeats)[0]


def generate_s(backend: backends.Backend, dtype: str, batch: int, repeats: int) -> float:
    cfg = gpt_b(dtype)
    params = jax.tree.map(lambda p: p.astype(dtype), init_params(cfg, jax.random.key(0))[0])
    dec = prepare(params, backend)
    labels = np.arange(batch, dtype=np.int32) * 7 % 1000
    seeds = iter(range(1000))
    return timed(lambda: jax.block_until_ready(generate(dec, cfg, labels, jax.random.key(next(seeds)),
                                                        cfg_scale=4.0, top_k=2000)), repeats)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    device = jax.devices()[0]
    offered = backends.for_devices([device]).ATTENTION
    print(f"device: {device.device_kind} ({device.platform}), dtype {args.dtype}, attention choices {offered}")
    rows = []
    for attention in offered:
        be = backends.for_devices([device], attention)
        t0 = time.perf_counter()
        row = {"attention": attention,
               "train_step_b8_s": train_s(be, args.dtype, 8, args.repeats),
               "generate_b1_s": generate_s(be, args.dtype, 1, args.repeats),
               "generate_b8_s": generate_s(be, args.dtype, 8, args.repeats)}
        row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
        print(f"{attention:8s} train_step_b8 {row['train_step_b8_s']:8.3f} s  generate_b1 {row['generate_b1_s']:8.3f} s"
              f"  generate_b8 {row['generate_b8_s']:8.3f} s")
    print(json.dumps({"device": device.device_kind, "platform": device.platform, "dtype": args.dtype, "rows": rows}))


if __name__ == "__main__":
    main()
