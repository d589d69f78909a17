"""Generation speed against quality: plain AR, speculative decoding and MaskGIT on the digits and the shapes codes.

Train every run it reads (each command resumes if run again):

    python train.py --config configs/digits_pixels.py --workdir runs/digits
    python train.py --config configs/digits_draft.py --workdir runs/digits_draft
    python train.py --config configs/digits_maskgit.py --workdir runs/digits_maskgit
    python train.py --config configs/shapes_vq.py --workdir runs/shapes_vq
    python train.py --config configs/shapes_ar.py --workdir runs/shapes_ar --config.tokenizer.workdir=runs/shapes_vq
    python train.py --config configs/shapes_draft.py --workdir runs/shapes_draft \
        --config.tokenizer.workdir=runs/shapes_vq
    python train.py --config configs/shapes_maskgit.py --workdir runs/shapes_maskgit \
        --config.tokenizer.workdir=runs/shapes_vq

then

    python benchmarks/generation_speed.py [--datasets digits,shapes] [--batches 1,32] [--repeats 3] [--k 4]

Speed: tokens/s and images/s of token generation only (the VQ decoder's pixels are not timed), each the median
of --repeats timed calls after one warm-up call (whose extra time is reported as compile time). Every method
uses its run's `config.sampling` settings (the target's for speculative decoding, which samples exactly the
target's distribution). Acceptance rate: accepted / proposed drafts over the timed calls (a round keeps the
batch's minimum, so it falls with the batch). Quality: class-consistency of `--per_class` samples per class
(drawn at the largest batch) by the independent judges of benchmarks/digits_quality.py (SVC on real training
digits) and benchmarks/vq_quality.py (the shape classifier, default judge). Prints a table, then one JSON
line whose top-level keys are those of the first dataset at the first batch size (the primary), with every
figure under `results[dataset][batch]`.
"""

from __future__ import annotations

import argparse
import json
import statistics

import jax
import numpy as np
from digits_quality import digit_classifier
from speed import timed

import ar_jax
from ar_jax.data.shapes import classify, shape_classifier
from ar_jax.data.sources import get_dataset
from ar_jax.decode import speculative

SPECULATIVE_SETTINGS = ("temperature", "top_k", "top_p", "min_p", "typical_p", "greedy", "cfg_scale")


def timed_calls(fn, labels: np.ndarray, repeats: int) -> tuple[float, float, list]:
    """`timed` over `fn(labels, seed)` with a new seed each call; also the stats of every call (warm-up first)."""
    stats, seeds = [], iter(range(10_000))
    med, compile_s = timed(lambda: stats.append(fn(labels, next(seeds))[1]), repeats)
    return med, compile_s, stats


def methods(target, draft, mg, k: int) -> dict:
    """name -> `fn(labels [B], seed) -> (tokens [B, T], stats or None)`."""
    spec_settings = {key: v for key, v in target.config.sampling.to_dict().items() if key in SPECULATIVE_SETTINGS}

    def plain(labels, seed):
        return jax.block_until_ready(target.sample_tokens(labels, seed)), None

    def spec(labels, seed):
        toks, stats = speculative.generate(target.params, target.model_config, draft.params, draft.model_config,
                                           labels, jax.random.key(seed), k=k, **spec_settings)
        return jax.block_until_ready(toks), {key: int(v) for key, v in stats.items()}

    def maskgit(labels, seed):
        return jax.block_until_ready(mg.sample_tokens(labels, seed)), None

    return {"plain": plain, "speculative": spec, "maskgit": maskgit}


def class_consistency(fn, judge, decode, num_classes: int, per_class: int, batch: int) -> float:
    """Fraction of `per_class` samples of each class that the judge labels with their class (batches padded)."""
    labels = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
    toks = []
    for i, start in enumerate(range(0, len(labels), batch)):
        chunk = labels[start:start + batch]
        padded = np.concatenate([chunk, np.repeat(chunk[:1], batch - len(chunk))])
        toks.append(np.asarray(fn(padded, 1000 + i)[0])[: len(chunk)])
    return float((judge(decode(np.concatenate(toks))) == labels).mean())


def bench_dataset(name: str, workdirs: dict, batches: list[int], repeats: int, k: int, per_class: int) -> dict:
    target, draft, mg = (ar_jax.load(workdirs[key]) for key in ("ar", "draft", "maskgit"))
    for key, pipe in zip(("ar", "draft", "maskgit"), (target, draft, mg)):
        print(f"{name} {key} {workdirs[key]}: {pipe.weights}")
    data = get_dataset(target.config.data)
    if name == "digits":
        clf = digit_classifier(target.tokenizer, data)
        judge, decode = clf.predict, lambda toks: toks  # the SVC reads pixel tokens
    else:
        clf = shape_classifier(data)
        judge, decode = (lambda images: classify(clf, images)), target.tokenizer.decode
    T, classes = target.model_config.seq_len, max(data.num_classes, 1)
    out: dict = {"quality": {}, "speed": {}, "steps": int(mg.config.sampling.steps), "k": k, "seq_len": T}
    fns = methods(target, draft, mg, k)
    for batch in batches:
        labels = np.arange(batch, dtype=np.int32) % classes
        row = {}
        for method, fn in fns.items():
            med, compile_s, stats = timed_calls(fn, labels, repeats)
            row[method] = {"tokens_per_s": batch * T / med, "images_per_s": batch / med, "seconds": med,
                           "compile_s": compile_s}
            if method == "speculative":
                timed_stats = stats[1:]  # the warm-up call apart
                proposed = sum(s["proposed"] for s in timed_stats)
                row[method]["acceptance_rate"] = sum(s["accepted"] for s in timed_stats) / max(proposed, 1)
                row[method]["rounds"] = statistics.median(s["rounds"] for s in timed_stats)
        out["speed"][batch] = row
    for method, fn in fns.items():
        out["quality"][method] = class_consistency(fn, judge, decode, classes, per_class, max(batches))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,shapes")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=4, help="drafts per speculative round")
    parser.add_argument("--per_class", type=int, default=20, help="samples per class for class-consistency")
    for name in ("digits", "shapes"):
        for role, default in (("ar", name if name == "digits" else "shapes_ar"), ("draft", f"{name}_draft"),
                              ("maskgit", f"{name}_maskgit")):
            parser.add_argument(f"--{name}_{role}", default=f"runs/{default}")
    args = parser.parse_args()
    datasets = [d for d in args.datasets.split(",") if d]
    if not datasets or set(datasets) - {"digits", "shapes"}:
        raise ValueError(f"--datasets={args.datasets!r} must list digits and/or shapes.")
    batches = [int(b) for b in args.batches.split(",")]
    if args.repeats < 3 or min(batches) < 1:
        raise ValueError(f"--repeats={args.repeats} must be >= 3 and --batches={args.batches} positive.")

    results = {}
    for name in datasets:
        workdirs = {role: getattr(args, f"{name}_{role}") for role in ("ar", "draft", "maskgit")}
        results[name] = bench_dataset(name, workdirs, batches, args.repeats, args.k, args.per_class)
        r = results[name]
        print(f"\n{name}: {r['seq_len']} tokens per image, speculative k={r['k']}, MaskGIT steps={r['steps']}, "
              f"medians of {args.repeats} ({jax.devices()[0].platform}, {jax.device_count()} device(s))")
        print(f"{'method':12s} {'batch':>5s} {'tokens/s':>10s} {'images/s':>9s} {'accept':>7s} {'compile s':>9s} "
              f"{'class-consistency':>17s}")
        for batch in batches:
            for method, s in r["speed"][batch].items():
                acc = f"{s['acceptance_rate']:7.3f}" if "acceptance_rate" in s else f"{'-':>7s}"
                print(f"{method:12s} {batch:5d} {s['tokens_per_s']:10.1f} {s['images_per_s']:9.2f} {acc} "
                      f"{s['compile_s']:9.1f} {r['quality'][method]:17.3f}")
    primary = results[datasets[0]]
    speed = primary["speed"][batches[0]]
    summary = {
        "primary": f"{datasets[0]}, batch {batches[0]}",
        "plain_tokens_per_s": speed["plain"]["tokens_per_s"],
        "speculative_tokens_per_s": speed["speculative"]["tokens_per_s"],
        "acceptance_rate": speed["speculative"]["acceptance_rate"],
        "maskgit_tokens_per_s": speed["maskgit"]["tokens_per_s"],
        "plain_class_consistency": primary["quality"]["plain"],
        "speculative_class_consistency": primary["quality"]["speculative"],
        "maskgit_class_consistency": primary["quality"]["maskgit"],
        "k": args.k, "maskgit_steps": primary["steps"], "results": results,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
