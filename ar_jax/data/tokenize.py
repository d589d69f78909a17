"""Encode a dataset once into ArrayRecord token shards (`ar_jax/data/shards.py`) for Grain to read.

    python -m ar_jax.data.tokenize --config configs/imagenet_gpt_b.py --out /data/imagenet_codes \
        [--config.tokenizer.workdir=runs/imagenet_vq16] [--process_index 0 --process_count 8]

The config names the image source (`config.data`), the tokenizer (`config.tokenizer`: a VQ run's workdir, pixels,
or a palette run's workdir via `--palette_workdir`) and the augmentation views (`config.loader.views`: "none",
"flip" = the image and its mirror, "ten_crop" = LlamaGen's ten crops of a 1.1x centre crop, centre first). The
train split is stored with its views, the test split with the plain image. Shard i is written by process
i % process_count; a finished shard (its `.done.json` beside it) is skipped, so a rerun after a kill completes the
directory with the same shards. Train on them with `--config.loader.shards=DIR`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from PIL import Image

from ar_jax.data.shards import FORMAT, INDEX_FILE, done_path, encode_record, shard_name

VIEWS = ("none", "flip", "ten_crop")
CROP_RANGE = 1.1  # LlamaGen's extract_codes_c2i.py --crop-range: ten crops of a centre crop 1.1x the image size
CHUNK = 256  # images per tokenizer call


def image_views(image: np.ndarray | Image.Image, views: str, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 views `[V, H, W, C]` of one image: itself ("none"), and its mirror ("flip"), or ten crops."""
    from ar_jax.data.sources import MODES, fit_image

    h, w, c = shape
    pil = image if isinstance(image, Image.Image) else Image.fromarray(
        np.asarray(image)[..., 0] if np.asarray(image).shape[-1] == 1 else np.asarray(image))
    if views == "ten_crop":
        big = fit_image(pil, int(h * CROP_RANGE), int(w * CROP_RANGE), MODES[c])
        bh, bw = big.shape[:2]
        corners = [((bh - h) // 2, (bw - w) // 2), (0, 0), (0, bw - w), (bh - h, 0), (bh - h, bw - w)]
        crops = [big[t:t + h, s:s + w] for t, s in corners]
        return np.stack(crops + [x[:, ::-1] for x in crops])
    fitted = fit_image(pil, h, w, MODES[c])
    return np.stack([fitted, fitted[:, ::-1]] if views == "flip" else [fitted])


def split_examples(data_config: ml_collections.ConfigDict, split: str) -> tuple[int, Callable[[int], tuple]]:
    """`(n, example)` with `example(i) -> (image (array or PIL), label, caption or None)` for the source's split:
    tfds datasets are read one example at a time; the other sources are held in memory (they are small)."""
    if data_config.name == "tfds":
        from ar_jax.data.tfds_source import image_array_to_pil, make_builder

        source = make_builder(data_config).as_data_source(split=data_config[f"tfds_{split}_split"])

        def example(i: int) -> tuple:
            record = source[i]  # decoded once
            return image_array_to_pil(record["image"]), int(record["label"]), None
        return len(source), example
    from ar_jax.data.sources import get_dataset

    data = get_dataset(data_config)
    images, labels = getattr(data, f"{split}_images"), getattr(data, f"{split}_labels")
    captions = getattr(data, f"{split}_captions")
    return len(images), lambda i: (images[i], int(labels[i]), None if captions is None else captions[i])


def tokenizer_info(tokenizer: Any) -> dict[str, Any]:
    """What `shards.check_tokenizer` compares: code count, tokens per image, grid, checkpoint step (VQ runs)."""
    pipe = getattr(tokenizer, "pipe", None)
    return {"vocab_size": int(tokenizer.vocab_size), "seq_len": int(tokenizer.seq_len),
            "grid": list(getattr(tokenizer, "grid", None) or []) or None,
            "step": getattr(pipe, "step", None), "workdir": str(getattr(pipe, "workdir", "") or "")}


def encode_images(tokenizer: Any, images: np.ndarray) -> np.ndarray:
    """uint8 `[B, H, W, C]` -> codes `[B, T]` (a VQ tokenizer's own encode, bypassing its dataset cache)."""
    pipe = getattr(tokenizer, "pipe", None)
    codes = pipe.encode(images) if pipe is not None else tokenizer.encode(images)
    return np.asarray(codes).reshape(len(images), -1)


def write_split(out: Path, split: str, n: int, example: Callable[[int], tuple], tokenizer: Any, views: str,
                shape: tuple[int, int, int], num_shards: int, process_index: int, process_count: int,
                bar: Any) -> None:
    """Write this process's unfinished shards of `split` (shard i holds examples [i*n/S, (i+1)*n/S))."""
    from array_record.python.array_record_module import ArrayRecordWriter

    for i in range(num_shards):
        path = out / shard_name(split, i, num_shards)
        if i % process_count != process_index or done_path(path).is_file():
            continue
        lo, hi = i * n // num_shards, (i + 1) * n // num_shards
        tmp = path.with_name(path.name + ".tmp")
        writer = ArrayRecordWriter(str(tmp), "group_size:1")
        for start in range(lo, hi, CHUNK):
            items = [example(j) for j in range(start, min(start + CHUNK, hi))]
            stacked = np.stack([image_views(img, views, shape) for img, _, _ in items])  # [B, V, H, W, C]
            codes = encode_images(tokenizer, stacked.reshape(-1, *shape)).reshape(len(items), stacked.shape[1], -1)
            for (_, label, caption), c in zip(items, codes):
                writer.write(encode_record(c, label, caption))
            bar.update(len(items))
        writer.close()
        os.replace(tmp, path)
        tmp_done = done_path(path).with_suffix(".tmp")
        tmp_done.write_text(json.dumps({"records": hi - lo}))
        os.replace(tmp_done, done_path(path))


def tokenize(config: ml_collections.ConfigDict, out: str | Path, records_per_shard: int = 4096,
             process_index: int = 0, process_count: int = 1, palette_workdir: str | None = None) -> Path:
    """Write (or complete) the token shards of `config.data` through `config.tokenizer` into `out`."""
    from tqdm import tqdm

    from ar_jax import builders

    views = config.loader.views
    if views not in VIEWS:
        raise ValueError(f"config.loader.views={views!r} is not known; use one of {VIEWS}.")
    if not 0 <= process_index < process_count:
        raise ValueError(f"--process_index {process_index} must be in 0..{process_count - 1} (--process_count).")
    if config.tokenizer.kind == "palette" and palette_workdir is None:
        raise ValueError("a palette tokenizer is fitted by its run: pass --palette_workdir W (that run's workdir).")
    tokenizer = builders.make_tokenizer(config, palette_workdir)
    shape = tuple(int(v) for v in config.data.image_shape)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits = {s: split_examples(config.data, s) for s in ("train", "test")}
    counts = {s: max(1, math.ceil(n / records_per_shard)) for s, (n, _) in splits.items()}
    index = {"format": FORMAT, "tokenizer": tokenizer_info(tokenizer), "views": {"train": views, "test": "none"},
             "image_shape": list(shape), "source": config.data.to_dict(),
             "splits": {s: {"num_shards": counts[s], "num_records": n} for s, (n, _) in splits.items()}}
    index = json.loads(json.dumps(index))
    path = out / INDEX_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        if old != index:
            raise ValueError(f"{path} describes other shards (another source, tokenizer, views or shard count); "
                             "write these into a new --out directory, or delete that one.")
    else:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(index, indent=1))
        os.replace(tmp, path)
    mine = sum((min((i + 1) * n // counts[s], n) - i * n // counts[s])
               for s, (n, _) in splits.items() for i in range(counts[s])
               if i % process_count == process_index and not done_path(out / shard_name(s, i, counts[s])).is_file())
    with tqdm(total=mine, desc=f"tokenize (process {process_index})", unit="image") as bar:
        for s, (n, example) in splits.items():
            write_split(out, s, n, example, tokenizer, index["views"][s], shape, counts[s], process_index,
                        process_count, bar)
    return out


def main(argv: list[str] | None = None) -> None:
    from ar_jax.config import apply_overrides, load_config_file

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="configs/X.py[:variant] naming config.data, config.tokenizer")
    parser.add_argument("--out", required=True, help="the shard directory (config.loader.shards of the training run)")
    parser.add_argument("--records_per_shard", type=int, default=4096)
    parser.add_argument("--process_index", type=int, default=0, help="this process's share: shards i % count == index")
    parser.add_argument("--process_count", type=int, default=1)
    parser.add_argument("--palette_workdir", default=None, help="a palette run's workdir (tokenizer.kind='palette')")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    bad = [a for a in rest if not a.startswith("--config.")]
    if bad:
        parser.error(f"unrecognised arguments {bad}; config overrides look like --config.loader.views=flip")
    config = apply_overrides(load_config_file(args.config), rest)
    try:
        out = tokenize(config, args.out, args.records_per_shard, args.process_index, args.process_count,
                       args.palette_workdir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"token shards: {out} (train with --config.loader.shards={out})")


if __name__ == "__main__":
    main()
