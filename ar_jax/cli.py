"""Command lines of train.py and sample.py: flags in, library calls out."""

from __future__ import annotations

import argparse
import sys
from typing import Any

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


def add_cores_flag(parser: argparse.ArgumentParser) -> None:
    """`--cpu_cores`: how many CPU cores XLA:CPU runs on (`ar_jax.backends.choose_cpu_cores`)."""
    parser.add_argument("--cpu_cores", default="auto",
                        help="CPU cores to decode on: auto (one for a small model and batch, where handing tiny "
                             "kernels between cores costs more than they do; else all), all, or a number")


def choose_cores(flag: str, workdir: str | None, batch: int) -> list[int]:
    """Apply `--cpu_cores` before JAX starts: "auto" sizes a decoding step of the run in `workdir` at `batch` images
    (parameters x rows, CFG doubling them); a run that is not a transformer, or no run, keeps every core. Returns the
    cores used."""
    from ar_jax import backends

    return backends.choose_cpu_cores(flag, estimated_params(workdir) if workdir else None, 2 * batch)


def estimated_params(workdir: str) -> int | None:
    """About how many parameters a decoding step of the transformer run in `workdir` reads (from its saved config
    alone, so nothing is computed before the cores are chosen); None for other families or unreadable configs."""
    config = _saved_config(workdir)
    if config is not None and config.get("kind") == "medusa":
        config = _saved_config(config.get("base_workdir", ""))
    try:
        m = config.model
        if m.get("family", "transformer") not in ("transformer", "maskgit"):
            return None
        dim, layers, heads = int(m.dim), int(m.num_layers), int(m.num_heads)
        kv = dim * int(m.get("num_kv_heads") or heads) // heads
        hidden = int(m.get("mlp_dim") or 8 * dim // 3)
        vocab = int(config.get("tokenizer", {}).get("codebook_size") or 256)
    except (AttributeError, KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return layers * (2 * dim * dim + 2 * dim * kv + 3 * dim * hidden) + vocab * dim


def _saved_config(workdir: str | None) -> Any:
    """The config saved in `workdir` (`ar_jax.config.read_config`), or None where there is none."""
    from ar_jax.config import read_config

    try:
        return read_config(workdir or "")
    except (ValueError, OSError):
        return None


@_friendly
def sample_main(argv: list[str] | None = None) -> None:
    from ar_jax.config import apply_overrides
    from ar_jax.images import save_grid
    from ar_jax.pipeline import ARPipeline, load

    parser = argparse.ArgumentParser(description="Sample images from a trained ar_jax workdir or LlamaGen checkpoints.")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=None, help="file.png (a grid, one row per class) or file.npz")
    parser.add_argument("--labels", default=None, help="comma-separated class ids (default: every class)")
    parser.add_argument("--prompt", action="append", default=None,
                        help="a text run's prompt, one row of the grid (repeat the flag for more)")
    parser.add_argument("--caption_embeddings", default=None,
                        help="a caption-feature run (LlamaGen t2i): .npz of T5 features, one grid row per caption: "
                             "t5_embs [B, L, F] and t5_mask [B, L] as the T5 encoder gives them (right-padded), or "
                             "caption_embs and emb_mask already left-padded (llamagen.left_pad)")
    parser.add_argument("--caption", nargs="+", default=None, metavar="IMAGE",
                        help="caption these image files instead of sampling (a run trained both ways, "
                             "config.model.text_head=True); prints one line per image")
    parser.add_argument("--per_class", type=int, default=None, help="samples per class (default: config's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=256, help="images per compiled sampling call")
    parser.add_argument("--weights", default="default",
                        help="best (lowest validation bits/dim), latest, raw (latest, non-EMA), ema, or default "
                             "(best where the run has a validation metric, else latest); as ar_jax.load")
    g = parser.add_argument_group("LlamaGen checkpoints (instead of --workdir)")
    g.add_argument("--llamagen_gpt", default=None, help="a LlamaGen GPT checkpoint (.pt or .safetensors); a t2i one "
                   "with --llamagen_args '{\"model_type\": \"t2i\", ...}' and --caption_embeddings")
    g.add_argument("--llamagen_vq", default=None, help="its VQ tokenizer checkpoint (omit to write tokens to .npz)")
    g.add_argument("--llamagen_preset", default="GPT-B", help="GPT-B, GPT-L, GPT-XL, ...")
    g.add_argument("--llamagen_args", default="{}", help='JSON of LlamaGen ModelArgs, e.g. \'{"block_size": 576}\'')
    g.add_argument("--llamagen_vq_args", default="{}", help="JSON of LlamaGen VQ ModelArgs")
    g.add_argument("--cfg_scale", type=float, default=None, help="LlamaGen's defaults: 4.0 (c2i), 7.5 (t2i)")
    g.add_argument("--top_k", type=int, default=None, help="LlamaGen's defaults: 2000 (c2i), 1000 (t2i)")
    g.add_argument("--top_p", type=float, default=1.0)
    g.add_argument("--temperature", type=float, default=1.0)
    add_cores_flag(parser)
    args, overrides = _split(sys.argv[1:] if argv is None else argv, parser)
    if args.caption is not None:
        if args.out or args.labels or args.prompt or args.caption_embeddings or args.llamagen_gpt:
            parser.error("--caption prints captions: pass only --workdir (and --seed, --config.* overrides) with it")
        if not args.workdir:
            parser.error("--caption needs --workdir (a run trained both ways)")
    elif not args.out:
        parser.error("pass --out file.png or file.npz (or --caption IMAGE ... to caption images)")
    elif not args.out.endswith((".png", ".npz")):
        parser.error(f"--out={args.out!r} must end in .png or .npz")
    if not args.workdir and not args.llamagen_gpt:
        parser.error("pass --workdir (a trained run) or --llamagen_gpt (a LlamaGen checkpoint)")
    choose_cores(args.cpu_cores, args.workdir if not args.llamagen_gpt else None, _images_per_call(args))
    if args.llamagen_gpt:
        return _sample_llamagen(args)
    pipe = load(args.workdir, weights=args.weights)
    if not isinstance(pipe, ARPipeline):
        raise ValueError(f"{args.workdir!r} is a tokenizer run (config.kind={pipe.config.kind!r}); sample from an AR "
                         "run trained on its codes instead (e.g. configs/shapes_ar.py).")
    print(f"weights: {pipe.weights}", file=sys.stderr)  # stdout carries only results (captions)
    if overrides:
        pipe = ARPipeline(apply_overrides(pipe.config, overrides), pipe.params, tokenizer=pipe.tokenizer,
                          text_tokenizer=pipe.text_tokenizer)
    if args.caption is not None:
        return _print_captions(pipe, args.caption, args.seed)
    per_class = args.per_class or pipe.config.samples_per_class
    if sum(x is not None for x in (args.labels, args.prompt, args.caption_embeddings)) > 1:
        parser.error("pass one of --labels (a class-conditional run), --prompt (a text run), --caption_embeddings "
                     "(a caption-feature run)")
    if args.caption_embeddings:
        from ar_jax.convert import llamagen

        feats = llamagen.check_captions(pipe.model_config, *_read_caption_embeddings(args.caption_embeddings))
        rows = list(range(len(feats["mask"])))
        cond = {"cond": {k: np.repeat(feats[k], per_class, 0) for k in ("features", "mask")}}
    elif args.prompt is not None:
        rows = list(args.prompt)
        pipe.condition(prompts=rows)  # refused here, before anything is compiled, if it cannot be
        cond = {"prompts": np.repeat(np.asarray(rows, object), per_class)}
    else:
        all_classes = list(range(max(pipe.config.data.num_classes, 1)))
        rows = [int(x) for x in args.labels.split(",")] if args.labels else all_classes
        cond = {"labels": np.repeat(np.asarray(rows, np.int32), per_class)}
    images = _sample_in_batches(pipe, cond, args.seed, args.batch_size)
    if args.out.endswith(".npz"):
        saved = {"caption_index": np.repeat(rows, per_class)} if "cond" in cond else cond
        np.savez(args.out, images=images, **{k: v.astype(str) if k == "prompts" else v for k, v in saved.items()})
    else:
        save_grid(images, rows=len(rows), path=args.out)
    print(f"wrote {len(images)} samples to {args.out}")


def _images_per_call(args: argparse.Namespace) -> int:
    """How many images (or captions) one sampling call of sample.py will make, from the flags and the run's saved
    config alone (read before JAX starts, to choose the CPU cores)."""
    if args.caption is not None:
        return len(args.caption)
    config = _saved_config(args.workdir)
    if config is None:
        return args.batch_size
    per_class = args.per_class or int(config.get("samples_per_class", 1) or 1)
    rows = (len(args.prompt) if args.prompt else len(args.labels.split(",")) if args.labels
            else max(int(config.get("data", {}).get("num_classes", 1) or 1), 1))
    return max(1, min(args.batch_size, rows * per_class))


def _print_captions(pipe: object, paths: list[str], seed: int) -> None:
    """Read image files of the run's size and channels and print `path: caption` for each (one decoding for all)."""
    from pathlib import Path

    from PIL import Image

    from ar_jax.data.folder import read_image
    from ar_jax.decode import captioning

    captioning.check_model(pipe.model_config)  # refused before any file is read
    H, W, C = pipe.tokenizer.image_shape
    mode = {1: "L", 3: "RGB"}[C]
    images = []
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"--caption {path!r}: no such file.")
        try:
            image = read_image(Path(path), H, W, mode, resize=True)  # a readable file, as pixels
        except ValueError as e:
            raise ValueError(f"--caption {path!r}: {e}") from None
        with Image.open(path) as f:
            if f.size != (W, H) or f.mode != mode:
                raise ValueError(f"--caption {path!r} is a {f.size[1]}x{f.size[0]} {f.mode} image; this run captions "
                                 f"{H}x{W} {mode} images ({C} channel(s)): resize or convert it.")
        images.append(image)
    for path, text in zip(paths, pipe.caption(images, seed=seed)):
        print(f"{path}: {text}")


def _read_caption_embeddings(path: str) -> tuple[np.ndarray, np.ndarray]:
    """`(caption_embs, emb_mask)` as LlamaGen's t2i `generate()` takes them, from an .npz holding them, or holding a
    T5 encoder's right-padded `t5_embs` and `t5_mask` (reordered by `llamagen.left_pad`)."""
    from ar_jax.convert import llamagen

    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"--caption_embeddings={path!r} cannot be read as an .npz ({e}).") from None
    if {"t5_embs", "t5_mask"} <= arrays.keys():
        return llamagen.left_pad(arrays["t5_embs"], arrays["t5_mask"])
    if {"caption_embs", "emb_mask"} <= arrays.keys():
        return arrays["caption_embs"], arrays["emb_mask"]
    raise ValueError(f"--caption_embeddings={path!r} holds {sorted(arrays)}; it needs t5_embs [B, L, F] and t5_mask "
                     "[B, L] (a T5 encoder's output), or caption_embs and emb_mask (left-padded).")


def _sample_in_batches(pipe: object, cond: dict, seed: int, batch_size: int) -> np.ndarray:
    """Sample `cond` (`{"labels": [N]}`, `{"prompts": [N]}` or `{"cond": a dict of [N, ...] arrays}`) in batches of at
    most `batch_size` (one compilation: the last batch is padded), with a progress bar; batch i uses seed
    `seed + i`."""
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"--batch_size={batch_size} must be >= 1.")
    (key, values), = cond.items()
    n = len(next(iter(values.values()))) if isinstance(values, dict) else len(values)
    bs = min(batch_size, n)
    out = []
    for i, start in enumerate(tqdm(range(0, n, bs), desc="sample", unit="batch", disable=n <= bs)):
        idx = np.arange(start, min(start + bs, n))
        idx = np.concatenate([idx, np.full(bs - len(idx), start)])
        arg = {k: v[idx] for k, v in values.items()} if isinstance(values, dict) else values[idx]
        arg = list(arg) if key == "prompts" else arg
        out.append(pipe.sample(seed=seed + i, **{key: arg})[: min(bs, n - start)])
    return np.concatenate(out)


def _sample_llamagen(args: argparse.Namespace) -> None:
    """Samples from released LlamaGen checkpoints (class labels, or T5 caption features for t2i), with LlamaGen's
    sampling defaults."""
    import json
    import math

    from ar_jax.convert import llamagen
    from ar_jax.images import save_grid

    gen = llamagen.load_gpt(args.llamagen_gpt, preset=args.llamagen_preset, **json.loads(args.llamagen_args))
    vq = llamagen.load_vq(args.llamagen_vq, **json.loads(args.llamagen_vq_args)) if args.llamagen_vq else None
    if vq is not None and vq.cfg.codebook_size != gen.cfg.vocab_size:
        raise ValueError(f"the GPT's vocab_size={gen.cfg.vocab_size} differs from the VQ's codebook_size="
                         f"{vq.cfg.codebook_size}: pass the VQ this GPT was trained on (or --llamagen_vq_args).")
    t2i = isinstance(gen, llamagen.LlamaGenT2I)
    if t2i != bool(args.caption_embeddings) or (t2i and args.labels):
        raise ValueError("a t2i GPT (--llamagen_args '{\"model_type\": \"t2i\", ...}') samples from "
                         "--caption_embeddings, a c2i one from --labels." if t2i else
                         "--caption_embeddings needs a t2i GPT: add \"model_type\": \"t2i\" to --llamagen_args.")
    per = args.per_class or 1
    if t2i:
        embs, mask = _read_caption_embeddings(args.caption_embeddings)
        gen.condition(embs, mask)  # refused here, before anything is compiled, if it cannot be
        classes = list(range(len(embs)))
        cond, saved = (np.repeat(embs, per, 0), np.repeat(mask, per, 0)), {"caption_index": np.repeat(classes, per)}
    else:
        classes = [int(x) for x in args.labels.split(",")] if args.labels else [207, 360, 387, 974, 88, 979, 417, 279]
        cond = (np.repeat(np.asarray(classes, np.int32), per),)
        saved = {"labels": cond[0]}
    defaults = (7.5, 1000) if t2i else (4.0, 2000)  # sample_t2i.py's, sample_c2i.py's
    cfg_scale = defaults[0] if args.cfg_scale is None else args.cfg_scale
    tokens = np.asarray(gen.sample(*cond, cfg_scale=cfg_scale, temperature=args.temperature, top_p=args.top_p,
                                   top_k=defaults[1] if args.top_k is None else args.top_k, seed=args.seed))
    if vq is None:
        if not args.out.endswith(".npz"):
            raise ValueError("without --llamagen_vq only tokens can be written: use --out tokens.npz.")
        np.savez(args.out, tokens=tokens, **saved)
        print(f"wrote {len(tokens)} token grids to {args.out}")
        return
    side = math.isqrt(tokens.shape[1])
    images = np.asarray(vq.decode(tokens.reshape(-1, side, side)))
    images = np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    if args.out.endswith(".npz"):
        np.savez(args.out, images=images, tokens=tokens, **saved)
    else:
        save_grid(images, rows=len(classes), path=args.out)
    print(f"wrote {len(images)} samples to {args.out}")
