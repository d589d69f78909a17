"""Quality of a shapes VQ tokenizer (and of a two-stage prior on its codes): PSNR, codebook usage, consistency.

    python benchmarks/vq_quality.py --vq_workdir runs/shapes_vq [--ar_workdir runs/shapes_ar] [--per_class 40]

Reconstruction PSNR is over the whole test split (uint8, from the mean squared error over all pixels), beside
the baseline that predicts the mean training image for every test image. Codebook usage: the fraction of the
codebook's codes that encode at least one test-set position.

Class-consistency (with --ar_workdir): the independent shape classifier of ar_jax/data/shapes.py
(bounding-box mask + logistic regression, fitted on the real training images only, plus a blurred + noisy
copy of them unless --strict_judge) labels class-conditional samples decoded by the VQ; the score is the
fraction labelled with the class they were asked for. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import ar_jax
from ar_jax.data.shapes import classify, shape_classifier
from ar_jax.data.sources import get_dataset
from ar_jax.training.vq_trainer import psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vq_workdir", default="runs/shapes_vq")
    parser.add_argument("--ar_workdir", default=None)
    parser.add_argument("--per_class", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cfg_scale", type=float, default=None, help="override the prior run's sampling cfg_scale")
    parser.add_argument("--top_k", type=int, default=None, help="override the prior run's sampling top_k")
    parser.add_argument("--temperature", type=float, default=None, help="override the prior run's temperature")
    parser.add_argument("--strict_judge", action="store_true", help="classifier fitted without blur/noise copies")
    args = parser.parse_args()

    vq = ar_jax.load(args.vq_workdir)
    data = get_dataset(vq.config.data)
    t0 = time.perf_counter()
    codes = vq.encode(data.test_images)
    recon = vq.decode(codes)
    vq_s = time.perf_counter() - t0
    mean_image = np.round(data.train_images.astype(np.float64).mean(0)).astype(np.uint8)
    result = {
        "psnr": psnr(recon, data.test_images),
        "psnr_mean_image": psnr(np.broadcast_to(mean_image, data.test_images.shape), data.test_images),
        "codebook_usage": float(len(np.unique(codes)) / vq.codebook_size),
        "class_consistency": None,
    }
    clf = shape_classifier(data, augment=not args.strict_judge)
    result["classifier_test_accuracy"] = float((classify(clf, data.test_images) == data.test_labels).mean())
    result["classifier_accuracy_on_reconstructions"] = float((classify(clf, recon) == data.test_labels).mean())
    print(f"tokenizer {args.vq_workdir}: {len(codes)} test images encoded+decoded in {vq_s:.1f} s "
          f"({vq.codebook_size} codes, grid {vq.grid})")
    if args.ar_workdir:
        pipe = ar_jax.load(args.ar_workdir)
        print(f"prior {args.ar_workdir}: {pipe.weights}")
        labels = np.repeat(np.arange(data.num_classes), args.per_class)
        t0 = time.perf_counter()
        overrides = {k: v for k in ("cfg_scale", "top_k", "temperature") if (v := getattr(args, k)) is not None}
        samples = pipe.sample(labels, seed=args.seed, **overrides)
        s = {**pipe.config.sampling.to_dict(), **overrides}
        print(f"prior {args.ar_workdir}: {len(labels)} samples (temperature {s['temperature']}, top_k {s['top_k']}, "
              f"top_p {s['top_p']}, cfg {s['cfg_scale']}) in {time.perf_counter() - t0:.1f} s")
        result["class_consistency"] = float((classify(clf, samples) == labels).mean())
        result["samples"] = len(labels)
    print(f"{'measure':44s} {'value':>8s}")
    for key, value in result.items():
        if value is not None:
            print(f"{key:44s} {value:8.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
