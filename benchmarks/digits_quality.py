"""Quality of the default digits run: test bits/dim and class-consistency of its samples, beside baselines.

    python benchmarks/digits_quality.py --workdir runs/digits [--per_class 50] [--seed 0]

Class-consistency: an independent classifier (scikit-learn SVC, fitted on the real training digits only)
labels class-conditional samples drawn with the run's default sampling settings; the score is the
fraction labelled with the class they were asked for. Baselines: the uniform model over 17 levels, and
an independent per-pixel categorical fitted on the training split (add-one smoothing). Prints a table,
then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
from sklearn.svm import SVC

import ar_jax
from ar_jax.data.sources import digits
from ar_jax.evaluation.likelihood import independent_pixel_bpd


def digit_classifier(tokenizer, data) -> SVC:
    """The independent judge: an SVC fitted on the real training digits' tokens only; `.predict(tokens [N, 64])`."""
    return SVC(gamma="scale", C=10.0).fit(tokenizer.encode(data.train_images), data.train_labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/digits")
    parser.add_argument("--per_class", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pipe = ar_jax.load(args.workdir)
    data = digits()
    tok = pipe.tokenizer
    train_t, test_t = tok.encode(data.train_images), tok.encode(data.test_images)
    levels = tok.vocab_size

    clf = digit_classifier(tok, data)
    real_acc = float((clf.predict(test_t) == data.test_labels).mean())

    bpd = float(pipe.bits_per_dim(data.test_images, data.test_labels).mean())
    labels = np.repeat(np.arange(data.num_classes), args.per_class)
    t0 = time.perf_counter()
    samples = pipe.sample(labels, seed=args.seed)
    sample_s = time.perf_counter() - t0
    consistency = float((clf.predict(tok.encode(samples)) == labels).mean())

    uniform = math.log2(levels)
    indep = independent_pixel_bpd(train_t, test_t, levels)
    s = pipe.config.sampling
    print(f"digits run {args.workdir} ({pipe.weights}): {len(labels)} samples (temperature {s.temperature}, "
          f"top_k {s.top_k}, top_p {s.top_p}, cfg {s.cfg_scale}) in {sample_s:.1f} s")
    print(f"{'measure':40s} {'value':>8s}")
    print(f"{'test bits/dim (model)':40s} {bpd:8.3f}")
    print(f"{'test bits/dim (independent pixels)':40s} {indep:8.3f}")
    print(f"{'test bits/dim (uniform, log2 17)':40s} {uniform:8.3f}")
    print(f"{'class-consistency of samples':40s} {consistency:8.3f}")
    print(f"{'classifier accuracy on real test digits':40s} {real_acc:8.3f}")
    print(json.dumps({"test_bits_per_dim": bpd, "independent_pixel_bits_per_dim": indep,
                      "uniform_bits_per_dim": uniform, "class_consistency": consistency,
                      "classifier_test_accuracy": real_acc, "samples": len(labels)}))


if __name__ == "__main__":
    main()
