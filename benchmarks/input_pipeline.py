"""What the Grain loader delivers from ArrayRecord token shards, beside what a GPT-B train step consumes.

    python benchmarks/input_pipeline.py                       # 20,000 ImageNet-shaped records, every setting
    python benchmarks/input_pipeline.py --records 512 --batches 4 --repeats 1 --skip_train   # a quick check

Writes synthetic shards of LlamaGen's GPT-B data (256 codes < 16384 per view, ten-crop views, a label; what
`python -m ar_jax.data.tokenize` writes for ImageNet) into a temporary directory, then reads global batches of
`--batch` records through the training loader (`ar_jax/data/pipeline.py`: per-epoch shuffle, a seeded view per
record, host rows, batching) with several (read threads, worker processes) settings. Each figure is the median of
`--repeats` windows of `--batches` batches, read back to back after a warm-up window (a window as long as the
read-ahead buffer, 4 batches, or shorter overstates the rate). The consumer column is the tokens/s of
`benchmarks/speed.py --only train_step_b8` (a float32 GPT-B train step on this machine, measured in its own
process); loader/step > 1 means the loader keeps up with training on this machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from timing import cpu, timed

SETTINGS = [(0, 0), (2, 0), (0, 1), (0, 2)]  # (read threads, worker processes)


def write_shards(directory: Path, records: int, views: int, tokens: int, vocab: int, per_shard: int) -> None:
    """Synthetic shards in the layout of `ar_jax.data.shards` (train split only)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    from ar_jax.data import shards

    rng = np.random.default_rng(0)
    n_shards = -(-records // per_shard)
    for i in range(n_shards):
        lo, hi = i * records // n_shards, (i + 1) * records // n_shards
        path = directory / shards.shard_name("train", i, n_shards)
        writer = ArrayRecordWriter(str(path), "group_size:1")
        for _ in range(lo, hi):
            writer.write(shards.encode_record(rng.integers(0, vocab, (views, tokens)), int(rng.integers(1000))))
        writer.close()
        shards.done_path(path).write_text(json.dumps({"records": hi - lo}))
    index = {"format": shards.FORMAT, "tokenizer": {"vocab_size": vocab, "seq_len": tokens, "grid": None, "step": None},
             "views": {"train": "ten_crop"}, "image_shape": [256, 256, 3], "source": {"num_classes": 1000},
             "splits": {"train": {"num_shards": n_shards, "num_records": records}}}
    (directory / shards.INDEX_FILE).write_text(json.dumps(index))


def bench_loader(directory: Path, batch: int, batches: int, threads: int, workers: int, repeats: int) -> float:
    """Median seconds to read `batches` global batches (one process) with this setting: back-to-back windows of one
    stream after a warm-up window, so no idle time lets the read-ahead buffer fill between them."""
    from ar_jax.data import pipeline, shards

    source = shards.ShardSource(directory, "train")

    def example(record: bytes, rng: np.random.Generator) -> dict:
        r = shards.pick_view(record, rng)
        return {"tokens": r["tokens"], "cond": np.int32(r["label"])}

    ds = pipeline.batches(source, batch, seed=0, random_map=example, share=(batch, 0, 1))
    it = pipeline.iterator(ds, read_threads=threads, prefetch=4 if threads or workers else 0, workers=workers)

    def read() -> None:
        for _ in range(batches):
            out = next(it)
        assert out["tokens"].shape == (batch, 256)

    return timed(read, repeats)[0]  # timed() runs the warm-up window, then the timed ones, back to back


def train_tokens_per_s(dtype: str) -> float | None:
    """Tokens/s of a GPT-B train step here, from benchmarks/speed.py in its own process."""
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("speed.py")), "--only", "train_step_b8",
                           "--json", "--dtype", dtype, "--repeats", "3"], capture_output=True, text=True)
    if proc.returncode:
        print(f"speed.py failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["tokens_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--views", type=int, default=10, help="views per record (ten-crop: 10)")
    parser.add_argument("--batch", type=int, default=256, help="global batch (LlamaGen GPT-B: 256)")
    parser.add_argument("--batches", type=int, default=20, help="batches per timed read")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", help="of the GPT-B train step (speed.py --dtype)")
    parser.add_argument("--skip_train", action="store_true", help="do not measure the train step")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_shards(Path(tmp), args.records, args.views, 256, 16384, per_shard=4096)
        write_s = time.perf_counter() - t0
        rows = []
        for threads, workers in SETTINGS:
            med = bench_loader(Path(tmp), args.batch, args.batches, threads, workers, args.repeats)
            rows.append({"read_threads": threads, "workers": workers, "median_s": med,
                         "records_per_s": args.batch * args.batches / med,
                         "tokens_per_s": args.batch * args.batches * 256 / med})
    consumer = None if args.skip_train else train_tokens_per_s(args.dtype)
    print(f"cpu: {cpu()}")
    print(f"{args.records} synthetic records ({args.views} views x 256 codes), written in {write_s:.1f} s; global "
          f"batch {args.batch}, {args.batches} batches a read, median of {args.repeats}")
    print(f"{'threads':>7s} {'workers':>7s} {'records/s':>10s} {'tokens/s':>11s} {'loader/step':>11s}")
    for r in rows:
        ratio = r["tokens_per_s"] / consumer if consumer else float("nan")
        r["loader_over_step"] = ratio
        print(f"{r['read_threads']:7d} {r['workers']:7d} {r['records_per_s']:10.0f} {r['tokens_per_s']:11.0f} "
              f"{ratio:11.1f}")
    print(f"GPT-B train step ({args.dtype}, batch 8, speed.py): "
          + (f"{consumer:.0f} tokens/s" if consumer else "not measured"))
    print(json.dumps({"cpu": cpu(), "records": args.records, "batch": args.batch, "train_step_tokens_per_s": consumer,
                      "settings": rows}))


if __name__ == "__main__":
    main()
