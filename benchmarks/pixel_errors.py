"""Where pixel models spend their bits: test NLL by kind of pixel and by channel, for trained runs side by side.

    python benchmarks/pixel_errors.py runs/shapes_gated_pixelcnn runs/shapes_pixelcnn_pp [--images 100]

Each workdir must hold a pixel-token run of the same data and tokenizer. A pixel is "flat" when it equals its left
and upper neighbours (all channels), "edge (left only)" when it equals its left neighbour only, "edge (up only)"
its upper one only, "neither" otherwise (the first row and column count as unequal there). Prints, per run and
kind, the share of pixels and the bits an image each channel costs (test split, true labels, the run's default
weights), then one JSON line `{workdir: {kind: [bits per channel]}}`.
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np
from likelihood import same_tokens_key  # benchmarks/likelihood.py: what fixes the test tokens

import ar_jax
from ar_jax.data.sources import get_dataset


def pixel_kinds(tokens: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks `[N, H, W]` of the four kinds, from tokens `[N, H, W, C]`."""
    left = np.zeros(tokens.shape[:3], bool)
    left[:, :, 1:] = (tokens[:, :, 1:] == tokens[:, :, :-1]).all(-1)
    up = np.zeros(tokens.shape[:3], bool)
    up[:, 1:] = (tokens[:, 1:] == tokens[:, :-1]).all(-1)
    return {"flat": left & up, "edge (left only)": left & ~up, "edge (up only)": ~left & up,
            "neither": ~left & ~up}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--images", type=int, default=100, help="first N test images")
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args()
    results, data, first = {}, None, None
    for workdir in args.workdirs:
        pipe = ar_jax.load(workdir)
        if data is None:
            data, first = get_dataset(pipe.config.data), pipe
        if same_tokens_key(pipe.config) != same_tokens_key(first.config):
            raise ValueError(f"{workdir} differs from {args.workdirs[0]} in data or tokenizer; compare runs of the "
                             "same test tokens.")
        images, labels = data.test_images[:args.images], data.test_labels[:args.images]
        tokens = np.asarray(pipe.tokenizer.encode(images))
        nll_fn = jax.jit(pipe.model_config.token_nll)
        nll = np.concatenate([np.asarray(nll_fn(pipe.params, tokens[i:i + args.batch], labels[i:i + args.batch]))
                              for i in range(0, len(tokens), args.batch)])
        shape = (len(tokens), *pipe.tokenizer.image_shape)  # [N, H, W, C]
        nll, grid = nll.reshape(shape), tokens.reshape(shape)
        n = len(tokens)
        results[workdir] = {}
        print(f"{workdir} ({pipe.weights}): {nll.sum() / n / np.log(2):.1f} bits an image")
        for kind, mask in pixel_kinds(grid).items():
            bits = nll[mask].sum(0) / n / np.log(2)
            results[workdir][kind] = [round(float(b), 2) for b in bits]
            print(f"  {kind:17s} {mask.mean():6.1%} of pixels  bits an image by channel "
                  f"{' / '.join(f'{b:.1f}' for b in bits)}  (sum {bits.sum():.1f})")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
