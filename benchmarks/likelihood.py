"""Test bits/dim of the pixel-level families on digits and shapes (same splits, same tokens), beside baselines.

    python benchmarks/likelihood.py [--digits_transformer runs/digits] [--shapes_pixelcnn_pp runs/x] ...

Each `--<dataset>_<model>` names a trained workdir (defaults below); one that is missing or has no checkpoint
is listed as not trained (null in the JSON). The runs come from:

    python train.py --config configs/digits_pixels.py --workdir runs/digits
    python train.py --config configs/digits_pixelcnn.py --workdir runs/digits_pixelcnn
    python train.py --config configs/digits_gated_pixelcnn.py --workdir runs/digits_gated_pixelcnn
    python train.py --config configs/digits_pixelcnn_pp.py --workdir runs/digits_pixelcnn_pp
    python train.py --config configs/shapes_pixels.py --workdir runs/shapes_pixels
    python train.py --config configs/shapes_pixelcnn.py --workdir runs/shapes_pixelcnn
    python train.py --config configs/shapes_gated_pixelcnn.py --workdir runs/shapes_gated_pixelcnn
    python train.py --config configs/shapes_pixelcnn_pp.py --workdir runs/shapes_pixelcnn_pp

(any `--config.x=y` overrides used are read back from each run's config.json and printed in its row: steps,
batch). All runs of a dataset must share the data section and the pixel tokenizer (refused otherwise), so the
test tokens are identical. Bits/dim: exact test NLL / (H*W*C) / ln 2 with each run's default weights (those of
`ar_jax.load(workdir)`: the checkpoint with the lowest validation bits/dim where the run kept one, else the latest;
EMA when kept; the "weights" column says which), conditional on the true label. Baselines: uniform over the
levels, and independent per-subpixel categoricals fitted on the training tokens (all of them, the runs' validation
split included; add-one smoothing). Prints a table, then one JSON line
`{"digits": {model: bpd, ...}, "shapes": {...}}`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax
import numpy as np

import ar_jax
from ar_jax import builders
from ar_jax.config import read_config
from ar_jax.data.sources import get_dataset
from ar_jax.evaluation.likelihood import bits_per_dim, independent_pixel_bpd

MODELS = ("transformer", "pixelcnn", "gated_pixelcnn", "pixelcnn_pp")
DEFAULTS = {
    "digits": {"transformer": "runs/digits", "pixelcnn": "runs/digits_pixelcnn",
               "gated_pixelcnn": "runs/digits_gated_pixelcnn", "pixelcnn_pp": "runs/digits_pixelcnn_pp"},
    "shapes": {"transformer": "runs/shapes_pixels", "pixelcnn": "runs/shapes_pixelcnn",
               "gated_pixelcnn": "runs/shapes_gated_pixelcnn", "pixelcnn_pp": "runs/shapes_pixelcnn_pp"},
}


def trained(workdir: str) -> bool:
    ckpt = Path(workdir) / "checkpoints"
    return (Path(workdir) / "config.json").is_file() and ckpt.is_dir() and any(ckpt.iterdir())


def same_tokens_key(config) -> str:
    """What fixes the test tokens: the data section and the tokenizer section."""
    if config.tokenizer.kind != "pixels":
        raise ValueError(f"tokenizer.kind={config.tokenizer.kind!r}: this benchmark compares pixel tokens only.")
    return json.dumps({"data": config.data.to_dict(), "tokenizer": config.tokenizer.to_dict()}, sort_keys=True,
                      default=str)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for dataset, runs in DEFAULTS.items():
        for model, workdir in runs.items():
            parser.add_argument(f"--{dataset}_{model}", default=workdir)
    args = parser.parse_args()

    results: dict[str, dict[str, float | None]] = {}
    rows = []
    for dataset in DEFAULTS:
        runs = {m: getattr(args, f"{dataset}_{m}") for m in MODELS}
        present = {m: w for m, w in runs.items() if trained(w)}
        results[dataset] = {m: None for m in MODELS}
        if not present:
            rows.append((dataset, "(no trained run)", "", "", "", "", ""))
            continue
        configs = {m: read_config(w) for m, w in present.items()}
        keys = {m: same_tokens_key(c) for m, c in configs.items()}
        first = next(iter(present))
        for m, k in keys.items():
            if k != keys[first]:
                raise ValueError(f"{present[m]} and {present[first]} differ in data or tokenizer; comparing needs"
                                 f" the same test tokens: train both from configs/{dataset}_*.py, no such overrides.")
        config = configs[first]
        data = get_dataset(config.data)
        for m in MODELS:
            if m not in present:
                rows.append((dataset, m, runs[m], "not trained", "", "", ""))
                continue
            pipe = ar_jax.load(present[m])
            tokens = pipe.tokenizer.encode(data.test_images)
            t0 = time.perf_counter()
            bpd = float(bits_per_dim(pipe.params, pipe.model_config, tokens, data.test_labels,
                                     int(np.prod(pipe.tokenizer.image_shape))).mean())
            n_params = sum(int(x.size) for x in jax.tree.leaves(pipe.params))
            step = max(int(p.name) for p in (Path(present[m]) / "checkpoints").iterdir() if p.name.isdigit())
            c = configs[m]
            rows.append((dataset, m, present[m], f"{bpd:.4f}", f"{step} x {c.batch_size}", pipe.weights,
                         f"{n_params / 1e6:.2f} M, eval {time.perf_counter() - t0:.0f} s"))
            results[dataset][m] = round(bpd, 4)
            print(f"{dataset} {m}: {bpd:.4f} ({pipe.weights})", file=sys.stderr)
        levels = int(config.tokenizer.levels)
        tok = builders.make_tokenizer(config)
        indep = independent_pixel_bpd(tok.encode(data.train_images), tok.encode(data.test_images), levels)
        rows.append((dataset, "baseline: independent per-subpixel", "", f"{indep:.4f}", "", "",
                     f"{len(data.test_images)} test images"))
        rows.append((dataset, f"baseline: uniform over {levels} levels", "", f"{math.log2(levels):.4f}", "", "", ""))

    header = ("data", "model", "workdir", "test bits/dim", "steps x batch", "weights", "parameters")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
