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

    parser = argparse.ArgumentParser(description="Sample images from a trained ar_jax workdir or LlamaGen checkpoints.")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", required=True, help="file.png (a grid, one row per class) or file.npz")
    parser.add_argument("--labels", default=None, help="comma-separated class ids (default: every class)")
    parser.add_argument("--per_class", type=int, default=None, help="samples per class (default: config's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=256, help="images per compiled sampling call")
    parser.add_argument("--weights", default="default",
                        help="best (lowest validation bits/dim), latest, raw (latest, non-EMA), ema, or default "
                             "(best where the run has a validation metric, else latest); as ar_jax.load")
    g = parser.add_argument_group("LlamaGen checkpoints (instead of --workdir)")
    g.add_argument("--llamagen_gpt", default=None, help="a LlamaGen c2i GPT checkpoint (.pt or .safetensors)")
    g.add_argument("--llamagen_vq", default=None, help="its VQ tokenizer checkpoint (omit to write tokens to .npz)")
    g.add_argument("--llamagen_preset", default="GPT-B", help="GPT-B, GPT-L, GPT-XL, ...")
    g.add_argument("--llamagen_args", default="{}", help='JSON of LlamaGen ModelArgs, e.g. \'{"block_size": 576}\'')
    g.add_argument("--llamagen_vq_args", default="{}", help="JSON of LlamaGen VQ ModelArgs")
    g.add_argument("--cfg_scale", type=float, default=4.0, help="LlamaGen's default 4.0")
    g.add_argument("--top_k", type=int, default=2000, help="LlamaGen's c2i default 2000")
    g.add_argument("--top_p", type=float, default=1.0)
    g.add_argument("--temperature", type=float, default=1.0)
    args, overrides = _split(sys.argv[1:] if argv is None else argv, parser)
    if not args.out.endswith((".png", ".npz")):
        parser.error(f"--out={args.out!r} must end in .png or .npz")
    if args.llamagen_gpt:
        return _sample_llamagen(args)
    if not args.workdir:
        parser.error("pass --workdir (a trained run) or --llamagen_gpt (a LlamaGen checkpoint)")
    pipe = load(args.workdir, weights=args.weights)
    if not isinstance(pipe, ARPipeline):
        raise ValueError(f"{args.workdir!r} is a tokenizer run (config.kind={pipe.config.kind!r}); sample from an AR "
                         "run trained on its codes instead (e.g. configs/shapes_ar.py).")
    print(f"weights: {pipe.weights}")
    if overrides:
        pipe = ARPipeline(apply_overrides(pipe.config, overrides), pipe.params, tokenizer=pipe.tokenizer)
    per_class = args.per_class or pipe.config.samples_per_class
    all_classes = list(range(max(pipe.config.data.num_classes, 1)))
    classes = [int(x) for x in args.labels.split(",")] if args.labels else all_classes
    labels = np.repeat(np.asarray(classes, np.int32), per_class)
    images = _sample_in_batches(pipe, labels, args.seed, args.batch_size)
    if args.out.endswith(".npz"):
        np.savez(args.out, images=images, labels=labels)
    else:
        save_grid(images, rows=len(classes), path=args.out)
    print(f"wrote {len(images)} samples to {args.out}")


def _sample_in_batches(pipe: object, labels: np.ndarray, seed: int, batch_size: int) -> np.ndarray:
    """Sample `labels` in batches of at most `batch_size` (one compilation: the last batch is padded), with a
    progress bar; batch i uses seed `seed + i`."""
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"--batch_size={batch_size} must be >= 1.")
    bs = min(batch_size, len(labels))
    out = []
    for i, start in enumerate(tqdm(range(0, len(labels), bs), desc="sample", unit="batch", disable=len(labels) <= bs)):
        chunk = labels[start:start + bs]
        padded = np.concatenate([chunk, np.repeat(chunk[:1], bs - len(chunk))])
        out.append(pipe.sample(padded, seed=seed + i)[: len(chunk)])
    return np.concatenate(out)


def _sample_llamagen(args: argparse.Namespace) -> None:
    """Class-conditional samples from released LlamaGen checkpoints, with LlamaGen's sampling defaults."""
    import json
    import math

    from ar_jax.convert import llamagen
    from ar_jax.images import save_grid

    gen = llamagen.load_gpt(args.llamagen_gpt, preset=args.llamagen_preset, **json.loads(args.llamagen_args))
    vq = llamagen.load_vq(args.llamagen_vq, **json.loads(args.llamagen_vq_args)) if args.llamagen_vq else None
    if vq is not None and vq.cfg.codebook_size != gen.cfg.vocab_size:
        raise ValueError(f"the GPT's vocab_size={gen.cfg.vocab_size} differs from the VQ's codebook_size="
                         f"{vq.cfg.codebook_size}: pass the VQ this GPT was trained on (or --llamagen_vq_args).")
    classes = [int(x) for x in args.labels.split(",")] if args.labels else [207, 360, 387, 974, 88, 979, 417, 279]
    labels = np.repeat(np.asarray(classes, np.int32), args.per_class or 1)
    tokens = np.asarray(gen.sample(labels, cfg_scale=args.cfg_scale, temperature=args.temperature, top_k=args.top_k,
                                   top_p=args.top_p, seed=args.seed))
    if vq is None:
        if not args.out.endswith(".npz"):
            raise ValueError("without --llamagen_vq only tokens can be written: use --out tokens.npz.")
        np.savez(args.out, tokens=tokens, labels=labels)
        print(f"wrote {len(tokens)} token grids to {args.out}")
        return
    side = math.isqrt(tokens.shape[1])
    images = np.asarray(vq.decode(tokens.reshape(-1, side, side)))
    images = np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    if args.out.endswith(".npz"):
        np.savez(args.out, images=images, labels=labels, tokens=tokens)
    else:
        save_grid(images, rows=len(classes), path=args.out)
    print(f"wrote {len(images)} samples to {args.out}")
