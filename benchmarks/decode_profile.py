"""Where a GPT-B generation's time goes on this machine: one profiled call of speed.py's generate, by kind of op.

    python benchmarks/decode_profile.py [--batch 8] [--dtype bfloat16]

Runs `sampling.generate` (CFG 4.0, top-k 2000, 256 tokens, float32 unless --dtype, speed.py's random GPT-B) once
to compile and warm up, then once under `jax.profiler` (a Perfetto trace in a temporary folder), and sums the
trace's op events by kind: the weight products and the attention of the native kernels (`ar_jax.kernels`, told
apart by their FFI target in the compiled HLO), XLA's products, cache writes, the rest of attention, the sampler's
fusions (`Categorical`, top-k), the rest.
The profiler adds its own cost to every op, so the shares matter more than the total; one profiled run, not a
median. Prints a table, then one JSON line `{"batch": ..., "dtype": ..., "total_s": ..., "kinds": {kind: seconds}}`.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from speed import gpt_b

from ar_jax import kernels, sampling
from ar_jax.models.transformer import init_params


def kinds_of(hlo: str) -> dict[str, str]:
    """HLO instruction name -> kind, from the compiled module's text."""
    out = {}
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = ", line)
        if not m:
            continue
        name, kind = m.group(1), None
        if 'custom_call_target="' + kernels.TARGET in line:
            kind = "native products"
        elif 'custom_call_target="' + kernels.ATTENTION_TARGET in line:
            kind = "native attention"
        elif "dynamic-update-slice" in name:
            kind = "cache and token writes"
        elif " dot(" in line or "ynn_fusion" in name:
            kind = "XLA products"
        elif "/attention/" in line:
            kind = "rest of attention (rope, XLA attention)"
        elif "Categorical" in line or "kth_largest" in line or "reduce-window" in name or "top_k" in line:
            kind = "sampling"
        if kind:
            out[name] = kind
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    cfg = gpt_b(args.dtype)
    params, _ = init_params(cfg, jax.random.key(0))
    params = jax.tree.map(lambda p: p.astype(args.dtype), params)  # as speed.py does
    dec_cfg, dec_params = cfg.decoding(params)
    labels = np.arange(args.batch, dtype=np.int32) * 7 % 1000
    run = lambda: jax.block_until_ready(sampling.generate(dec_params, dec_cfg, labels, jax.random.key(1),
                                                          cfg_scale=4.0, top_k=2000, temperature=1.0))
    run()
    hlo = sampling._generate.lower(
        dec_params, jnp.asarray(labels), jnp.zeros((args.batch, 0), jnp.int32), jax.random.key(1), jnp.float32(1.0),
        jnp.float32(1.0), jnp.float32(4.0), cfg=dec_cfg, top_k=2000, use_top_p=False, greedy=False, use_cfg=True,
        keep_logits=False).compile().as_text()
    kinds = kinds_of(hlo)
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        run()
        jax.profiler.stop_trace()
        path = sorted(glob.glob(f"{tmp}/**/*.trace.json.gz", recursive=True))[-1]
        events = json.load(gzip.open(path))["traceEvents"]
    ops = [e for e in events if e.get("ph") == "X" and not e["name"].startswith(("$", "ThunkExecutor", "end: "))]
    total = collections.Counter()
    for e in ops:
        if re.fullmatch(r"while(\.\d+)?", e["name"]):
            continue  # loops (the decoding scan among them): their bodies' ops are counted themselves
        total[kinds.get(e["name"], "other")] += e.get("dur", 0) / 1e6
    whole = sum(total.values())
    print(f"generate {args.dtype}, batch {args.batch} with CFG ({2 * args.batch} rows), one profiled run: "
          f"{whole:.2f} s in ops")
    for kind, s in total.most_common():
        print(f"{kind:40s} {s:7.2f} s {100 * s / whole:5.1f}%")
    print(json.dumps({"batch": args.batch, "dtype": args.dtype, "total_s": whole, "kinds": dict(total)}))


if __name__ == "__main__":
    main()
