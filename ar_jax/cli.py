"""Command lines of train.py and sample.py: flags in, library calls out."""

from __future__ import annotations

import argparse
import sys

import numpy as np

DEFAULT_CONFIG = "configs/digits_pixels.py"


def _split(argv: list[str], parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, list[str]]:
    args, rest = parser.parse_known_args(argv)
    bad = [a for a in rest if not a.startswith("--config.")]
    if bad:
        parser.error(f"unrecognised arguments {bad}; config overrides look like --config.batch_size=32")
    return args, rest


def _friendly(main):
    """Report a ValueError (bad config, labels, paths, ...) as one line and exit 2, without a traceback."""
    def run(argv: list[str] | None = None) -> None:
        try:
            main(argv)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    return run


@_friendly
def train_main(argv: list[str] | None = None) -> None:
    from ar_jax.config import apply_overrides, load_config_file
    from ar_jax.training import train_and_evaluate

    parser = argparse.ArgumentParser(description="Train an ar_jax run (resumes if the workdir has checkpoints).")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="configs/X.py or configs/X.py:variant")
    parser.add_argument("--workdir", required=True, help="where checkpoints, metrics and samples go")
    args, overrides = _split(sys.argv[1:] if argv is None else argv, parser)
    config = apply_overrides(load_config_file(args.config), overrides)
    train_and_evaluate(config, args.workdir)


@_friendly
def sample_main(argv: list[str] | None = None) -> None:
    import jax  # noqa: F401 - imported before work so that errors above come first

    from ar_jax.config import apply_overrides
    from ar_jax.images import save_grid
    from ar_jax.pipeline import ARPipeline, load

    parser = argparse.ArgumentParser(description="Sample images from a trained ar_jax workdir.")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True, help="file.png (a grid, one row per class) or file.npz")
    parser.add_argument("--labels", default=None, help="comma-separated class ids (default: every class)")
    parser.add_argument("--per_class", type=int, default=None, help="samples per class (default: config's)")
    parser.add_argument("--seed", type=int, default=0)
    args, overrides = _split(sys.argv[1:] if argv is None else argv, parser)
    if not args.out.endswith((".png", ".npz")):
        parser.error(f"--out={args.out!r} must end in .png or .npz")
    pipe = load(args.workdir)
    if overrides:
        pipe = ARPipeline(apply_overrides(pipe.config, overrides), pipe.params)
    per_class = args.per_class or pipe.config.samples_per_class
    all_classes = list(range(max(pipe.config.data.num_classes, 1)))
    classes = [int(x) for x in args.labels.split(",")] if args.labels else all_classes
    labels = np.repeat(np.asarray(classes, np.int32), per_class)
    images = pipe.sample(labels, seed=args.seed)
    if args.out.endswith(".npz"):
        np.savez(args.out, images=images, labels=labels)
    else:
        save_grid(images, rows=len(classes), path=args.out)
    print(f"wrote {len(images)} samples to {args.out}")
