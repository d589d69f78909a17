"""Sample quality of a run: FID, Inception Score, precision and recall of its samples, beside the real-data floor.

    python benchmarks/sample_quality.py --workdir runs/digits [--num_samples 300] [--seed 0] [--extractor net.npz]

Samples `num_samples` class-balanced images (labels 0, 1, ..., C-1, 0, 1, ...) with the run's default
sampling settings, extracts features with our classifier (trained on the real training split, see
`ar_jax/evaluation/features.py`) or a user's `.npz` MLP, and scores them against the training split.
The floor column scores the real test split the same way: the best a model can expect at that sample
count. FID and recall depend on the sample count, so compare runs at the same `--num_samples` (the
default, 300, matches the 297 test digits). The numbers are comparable between runs under the same
extractor key only, never with Inception-based figures. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax

import ar_jax
from ar_jax.data.sources import ImageDataset, get_dataset
from ar_jax.evaluation import features as feats
from ar_jax.evaluation import metrics


def sample_images(pipe: Any, num_samples: int, seed: int = 0, batch_size: int = 500,
                  params: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced samples: uint8 images `[N, H, W, C]` and their labels `[N]` (interleaved 0..C-1).

    `params`: sample with these weights instead of the pipe's (e.g. raw vs EMA); None keeps the pipe's.
    Every batch has `batch_size` rows (the last is padded), so sampling compiles once.
    """
    if params is not None:
        pipe = copy.copy(pipe)
        pipe.params = params
    num_classes = max(int(pipe.config.data.num_classes), 1)
    labels = np.arange(num_samples) % num_classes
    bs = min(batch_size, num_samples)
    padded = np.concatenate([labels, labels[: -num_samples % bs]])  # [ceil(N / bs) * bs]
    images = [pipe.sample(padded[i:i + bs], seed=seed * 100_000 + i // bs) for i in range(0, len(padded), bs)]
    return np.concatenate(images)[:num_samples], labels


def score(extractor: feats.FeatureExtractor, ref: feats.ReferenceStats, images: np.ndarray | None = None,
          stats: feats.ReferenceStats | None = None) -> dict[str, float]:
    """FID, IS, precision, recall of `images [N, H, W, C]` (or of precomputed `stats`) against `ref`."""
    if stats is None:
        features, logits = extractor(images)
        mu, sigma = metrics.feature_stats(features)
    else:
        features, logits, mu, sigma = stats.features, stats.logits, stats.mu, stats.sigma
    precision, recall = metrics.precision_recall(ref.features, features)
    return {"fid": metrics.frechet_distance(mu, sigma, ref.mu, ref.sigma),
            "inception_score": metrics.inception_score(softmax(logits, -1)) if logits is not None else float("nan"),
            "precision": precision, "recall": recall, "n": int(features.shape[0])}


def sample_quality(pipe: Any, data: ImageDataset, dataset_name: str, num_samples: int = 300, seed: int = 0,
                   extractor: feats.FeatureExtractor | None = None, params: Any = None,
                   cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Metrics of `pipe`'s samples and of the real test split, both against the real training split.

    `extractor` defaults to our classifier trained on `data`'s training split; `params` as in `sample_images`.
    """
    if extractor is None:
        extractor = feats.default_extractor(data.train_images, data.train_labels, data.num_classes)
    ref = feats.reference_stats(extractor, data.train_images, f"{dataset_name}/train", cache_dir)
    test = feats.reference_stats(extractor, data.test_images, f"{dataset_name}/test", cache_dir)
    t0 = time.perf_counter()
    images, labels = sample_images(pipe, num_samples, seed, params=params)
    sample_s = time.perf_counter() - t0
    out = {"samples": score(extractor, ref, images), "real_test": score(extractor, ref, stats=test),
           "extractor": extractor.key, "reference_images": int(data.train_images.shape[0]), "sample_seconds": sample_s}
    if test.logits is not None:
        out["classifier_test_accuracy"] = float((test.logits.argmax(1) == data.test_labels).mean())
        _, logits = extractor(images)
        out["class_consistency"] = float((logits.argmax(1) == labels).mean()) if data.num_classes else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/digits")
    parser.add_argument("--num_samples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extractor", default=None, help="an .npz MLP (features.save_npz format); default: ours")
    parser.add_argument("--cache_dir", default=None, help="reference statistics cache (~/.cache/ar_jax/ref_stats)")
    args = parser.parse_args()

    pipe = ar_jax.load(args.workdir)
    data = get_dataset(pipe.config.data)
    extractor = feats.load_npz(args.extractor) if args.extractor else None
    weights = ["ema", "raw"] if pipe.config.get("ema_decay", 0.0) > 0 else ["raw"]
    runs = {}
    for w in weights:  # the same seed and labels for both, so only the weights differ
        chosen = ar_jax.load(args.workdir, weights=w)
        print(f"{w} weights: {chosen.weights}")
        params = chosen.params
        runs[w] = sample_quality(pipe, data, pipe.config.data.name, args.num_samples, args.seed, extractor,
                                 params=params, cache_dir=args.cache_dir)
    r = runs[weights[0]]
    f = r["real_test"]
    print(f"run {args.workdir}: {r['samples']['n']} samples per weights; extractor {r['extractor']} "
          f"(test accuracy {r.get('classifier_test_accuracy', float('nan')):.3f}); reference: "
          f"{r['reference_images']} real training images")
    print(f"{'measure':24s} " + " ".join(f"{w + ' weights':>12s}" for w in weights) + f" {'floor (real test)':>18s}")
    for name, label in [("fid", "FID (lower is better)"), ("inception_score", "Inception Score"),
                        ("precision", "precision (k=3)"), ("recall", "recall (k=3)"), ("n", "images")]:
        print(f"{label:24s} " + " ".join(f"{runs[w]['samples'][name]:12.4g}" for w in weights) + f" {f[name]:18.4g}")
    if "class_consistency" in r:
        print(f"{'class-consistency':24s} " + " ".join(f"{runs[w]['class_consistency']:12.4g}" for w in weights))
    print(json.dumps({**{w: {**runs[w]["samples"], "class_consistency": runs[w].get("class_consistency")}
                         for w in weights}, "real_test_floor": f, "extractor": r["extractor"]}))

if __name__ == "__main__":
    main()
