"""A folder of images, one subfolder per class: `path/<class>/**/<file>`; class ids follow sorted subfolder names.

`config.data` fields: `path`, `image_shape` (H, W, C with C = 1 grey or 3 RGB), `test_fraction`, `on_bad_file`
("skip" | "error") and `resize`. Files are read with PIL with truncated-image tolerance forced off. A file that is
not a readable image, or (with `resize=False`) has another mode or size than `image_shape`, is skipped and named in
one warning, or with `on_bad_file="error"` stops the run with a ValueError naming it.

The source "caption_folder" reads images with captions instead of classes (labels all 0, `num_classes=0`): the
same fields plus `captions`, where they come from:

- "jsonl": `path/captions.jsonl`, one JSON object a line, `{"file": "relative/path.png", "caption": "..."}`;
- "txt": a text file beside each image with the same stem (`a/001.png` and `a/001.txt`), UTF-8.

Images anywhere under `path` are used (subfolders are not classes). An image whose caption is missing or empty
(or listed twice, or whose line is not valid JSON) is a bad file like an unreadable image: skipped and named in
the warning, or an error with `on_bad_file="error"`. Whitespace runs in captions become one space.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import ml_collections
import numpy as np
from PIL import Image, ImageFile, ImageOps

from ar_jax.data.sources import ImageDataset, fit_image, image_size_and_mode, require

MAX_LOGGED_PATHS = 20  # files named in one warning; the count covers them all
ON_BAD_FILE = ("skip", "error")
CAPTIONS = ("jsonl", "txt")  # config.data.captions of the "caption_folder" source
CAPTIONS_FILE = "captions.jsonl"
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # 16-bit/float: converting to 8 bits would clip


def held_out_files(relpaths: list[str], test_fraction: float) -> set[str]:
    """The test files: the round(test_fraction * N) paths (at least 1, at most N - 1) of smallest sha256.

    `relpaths` are all image files found ("class/name.png", relative to the folder), before any is read, so the
    split depends only on the set of file names: not on their order, and not on which files turn out bad.
    """
    n = len(relpaths)
    k = min(max(1, round(test_fraction * n)), n - 1)
    return set(sorted(relpaths, key=lambda r: hashlib.sha256(r.encode("utf-8")).digest())[:k])


@contextlib.contextmanager
def strict_truncation() -> Iterator[None]:
    """Read with PIL's `ImageFile.LOAD_TRUNCATED_IMAGES` off (another library may have switched it on)."""
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def read_image(path: Path, height: int, width: int, mode: str, resize: bool) -> np.ndarray:
    """One image file -> uint8 `[H, W, C]`; a ValueError says what is wrong with a file that cannot be used."""
    try:
        with Image.open(path) as image:
            image.verify()  # structure and checksums (PNG CRCs) without decoding
        image = Image.open(path)
        try:
            image.load()  # decodes every pixel: a truncated file fails here
        except BaseException:
            image.close()
            raise
    except (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"not a readable image ({type(e).__name__}: {e})") from None
    with image:
        if image.mode in WIDE_MODES:
            raise ValueError(f"mode {image.mode!r} (16-bit or float) would be clipped to 8 bits; save it as 8-bit")
        image = ImageOps.exif_transpose(image)  # camera JPEGs: the stored orientation, as viewers show them
        if not resize:
            if image.mode != mode:
                raise ValueError(f"mode {image.mode!r}, but config.data.image_shape has {len(mode)} channel(s) "
                                 f"(mode {mode!r}); convert the file, or set config.data.resize=True")
            if image.size != (width, height):
                raise ValueError(f"size {image.size[1]}x{image.size[0]} (HxW), but config.data.image_shape is "
                                 f"{height}x{width}; resize the file, or set config.data.resize=True")
        return fit_image(image, height, width, mode)


def list_files(root: Path) -> tuple[list[str], list[tuple[Path, int]], list[Path]]:
    """`(class names, [(image path, class id)], ignored paths)` under `root`, in sorted order.

    Image files are those with an extension PIL knows; other files, and files outside any class folder, are
    ignored (and reported). Hidden files and folders (".name") are passed over silently.
    """
    extensions = Image.registered_extensions()  # {".png": "PNG", ...}
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    ignored = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    files = []
    for label, name in enumerate(classes):
        for p in sorted((root / name).rglob("*")):
            if not p.is_file() or any(part.startswith(".") for part in p.relative_to(root).parts):
                continue
            if p.suffix.lower() in extensions:
                files.append((p, label))
            else:
                ignored.append(p)
    return classes, files, ignored


def _listing(paths: list[str]) -> str:
    """The first MAX_LOGGED_PATHS entries, then how many more."""
    more = len(paths) - MAX_LOGGED_PATHS
    return "; ".join(paths[:MAX_LOGGED_PATHS]) + (f"; ... and {more} more" if more > 0 else "")


def _settings(data_config: ml_collections.ConfigDict, layout: str) -> tuple[Path, int, int, str, float, str, bool]:
    """`(root, H, W, mode, test_fraction, on_bad_file, resize)` from `config.data`, checked; `layout` names what the
    folder should hold, for the message when it is missing."""
    height, width, mode = image_size_and_mode(data_config)
    path = require(data_config, "path")
    test_fraction = require(data_config, "test_fraction")
    on_bad_file = require(data_config, "on_bad_file")
    resize = require(data_config, "resize")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"config.data.test_fraction={test_fraction!r} must be between 0 and 1 (e.g. 0.1).")
    if on_bad_file not in ON_BAD_FILE:
        raise ValueError(f"config.data.on_bad_file={on_bad_file!r}; use one of {ON_BAD_FILE}.")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ValueError(f"config.data.path={path!r}: folder {root} does not exist (or is not a folder); "
                         f"set --config.data.path to a folder with {layout}.")
    return root, height, width, mode, test_fraction, on_bad_file, resize


def _read_splits(root: Path, items: list, test_files: set[str], height: int, width: int, mode: str, resize: bool,
                 on_bad_file: str, bad: list[str]) -> dict[str, tuple[list, list]]:
    """`{"train" | "test": (images, extras)}` for `items` `[(path, extra)]`; unreadable files go to `bad`."""
    splits = {"train": ([], []), "test": ([], [])}
    with strict_truncation():
        for p, extra in items:
            try:
                image = read_image(p, height, width, mode, resize)
            except ValueError as e:
                if on_bad_file == "error":
                    raise ValueError(f"{p}: {e}. Fix or remove the file, or set config.data.on_bad_file='skip' "
                                     "to skip bad files.") from None
                bad.append(f"{p} ({e})")
                continue
            images, extras = splits["test" if p.relative_to(root).as_posix() in test_files else "train"]
            images.append(image)
            extras.append(extra)
    return splits


def _check_splits(splits: dict, root: Path, num_files: int, num_bad: int, test_fraction: float) -> None:
    for name, (images, _) in splits.items():
        if not images:
            raise ValueError(f"folder {root} (config.data.path) gives no usable {name} images ({num_files} image "
                             f"files, {num_bad} bad, config.data.test_fraction={test_fraction}); add images "
                             "or change test_fraction.")


def folder_dataset(data_config: ml_collections.ConfigDict) -> ImageDataset:
    """Images `[N, H, W, C]` uint8 and labels `[N]` int32 from `config.data.path`, split by `held_out_files`."""
    root, height, width, mode, test_fraction, on_bad_file, resize = _settings(
        data_config, "one subfolder of images per class")
    classes, files, ignored = list_files(root)
    if not classes:
        raise ValueError(f"folder {root} (config.data.path) has no class subfolders; put each class's images "
                         f"in its own subfolder, e.g. {root}/cat/001.png.")
    if not files:
        raise ValueError(f"folder {root} (config.data.path) has no image files in its {len(classes)} class "
                         f"subfolders {classes[:10]}.")
    if ignored:
        logging.warning("ignored %d files under %s that are not images (by extension) or not in a class "
                        "subfolder: %s", len(ignored), root, _listing([str(p) for p in ignored]))

    test_files = held_out_files([p.relative_to(root).as_posix() for p, _ in files], test_fraction)
    bad = []
    splits = _read_splits(root, files, test_files, height, width, mode, resize, on_bad_file, bad)
    if bad:
        logging.warning("skipped %d bad image files of %d under %s: %s", len(bad), len(files), root,
                        _listing(bad))
    _check_splits(splits, root, len(files), len(bad), test_fraction)
    logging.info("folder %s: %d classes %s, %d train / %d test images", root, len(classes), classes[:10],
                 len(splits["train"][0]), len(splits["test"][0]))
    (train_x, train_y), (test_x, test_y) = (
        (np.stack(images), np.asarray(labels, np.int32)) for images, labels in splits.values())
    return ImageDataset(train_x, train_y, test_x, test_y, num_classes=len(classes))


def list_images(root: Path) -> tuple[list[Path], list[Path]]:
    """`(image paths, other paths)` anywhere under `root` (hidden files and folders passed over), sorted."""
    extensions = Image.registered_extensions()
    images, others = [], []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts):
            (images if p.suffix.lower() in extensions else others).append(p)
    return images, others


def _clean(caption: object) -> str:
    return " ".join(caption.split()) if isinstance(caption, str) else ""


def jsonl_captions(root: Path, images: list[Path]) -> tuple[dict[Path, str], dict[Path, str]]:
    """`({image: caption}, {path: problem})` from `root/captions.jsonl`; images it does not caption are problems."""
    listing = root / CAPTIONS_FILE
    if not listing.is_file():
        raise ValueError(f"config.data.captions='jsonl' but {listing} does not exist; write one line "
                         '{"file": "relative/path.png", "caption": "..."} per image, or use captions=\'txt\'.')
    captions, problems, lines, known = {}, {}, {}, set(images)
    with open(listing, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{CAPTIONS_FILE} line {number}"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                problems[listing.with_name(f"{CAPTIONS_FILE}:{number}")] = f"{where} is not valid JSON: {e}"
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
                problems[listing.with_name(f"{CAPTIONS_FILE}:{number}")] = f'{where} has no "file" string'
                continue
            path = Path(os.path.normpath(root / entry["file"]))
            if path in lines:
                problems[path] = f"captioned again on {where} (first on line {lines[path]}); one caption per image"
                captions.pop(path, None)
                continue
            lines[path] = number
            caption = _clean(entry.get("caption"))
            if not caption:
                problems[path] = f"empty or missing caption on {where}"
            elif path not in known:
                problems[path] = (f"listed on {where} but " + ("not an image under the folder (by extension)"
                                                               if path.is_file() else "there is no such file"))
            else:
                captions[path] = caption
    for p in images:
        if p not in lines:
            problems[p] = f"no caption in {CAPTIONS_FILE}"
    return captions, problems


def txt_captions(images: list[Path]) -> tuple[dict[Path, str], dict[Path, str]]:
    """`({image: caption}, {image: problem})` from the `.txt` file beside each image."""
    captions, problems = {}, {}
    for p in images:
        txt = p.with_suffix(".txt")
        if not txt.is_file():
            problems[p] = f"no caption file {txt.name} beside it"
            continue
        try:
            caption = _clean(txt.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            problems[p] = f"caption file {txt.name} is not readable UTF-8 text ({type(e).__name__})"
            continue
        if caption:
            captions[p] = caption
        else:
            problems[p] = f"empty caption file {txt.name}"
    return captions, problems


def caption_folder_dataset(data_config: ml_collections.ConfigDict) -> ImageDataset:
    """Images `[N, H, W, C]` uint8 with captions from `config.data.path` (labels 0), split by `held_out_files`."""
    kind = require(data_config, "captions")
    if kind not in CAPTIONS:
        raise ValueError(f"config.data.captions={kind!r}; use 'jsonl' ({CAPTIONS_FILE} in the folder) or 'txt' "
                         "(a .txt file beside each image).")
    root, height, width, mode, test_fraction, on_bad_file, resize = _settings(
        data_config, f"captioned images ({CAPTIONS_FILE} or a .txt beside each image)")
    images, others = list_images(root)
    if not images:
        raise ValueError(f"folder {root} (config.data.path) has no image files.")
    captions, problems = jsonl_captions(root, images) if kind == "jsonl" else txt_captions(images)
    used = {root / CAPTIONS_FILE} if kind == "jsonl" else {p.with_suffix(".txt") for p in images}
    ignored = [p for p in others if p not in used]
    if ignored:
        logging.warning("ignored %d files under %s that are not images (by extension) or their captions: %s",
                        len(ignored), root, _listing([str(p) for p in ignored]))
    if problems and on_bad_file == "error":
        path, problem = next(iter(problems.items()))
        raise ValueError(f"{path}: {problem}. Caption the image (or remove it), or set "
                         "config.data.on_bad_file='skip' to skip images without a caption.")
    bad = [f"{p} ({problem})" for p, problem in problems.items()]
    test_files = held_out_files([p.relative_to(root).as_posix() for p in images], test_fraction)
    items = [(p, captions[p]) for p in images if p in captions]
    splits = _read_splits(root, items, test_files, height, width, mode, resize, on_bad_file, bad)
    if bad:
        logging.warning("skipped %d bad image files or captions (%d images) under %s: %s", len(bad), len(images),
                        root, _listing(bad))
    _check_splits(splits, root, len(images), len(bad), test_fraction)
    logging.info("caption folder %s: %d train / %d test images", root, len(splits["train"][0]),
                 len(splits["test"][0]))
    (train_x, train_c), (test_x, test_c) = ((np.stack(x), tuple(c)) for x, c in splits.values())
    return ImageDataset(train_x, np.zeros(len(train_x), np.int32), test_x, np.zeros(len(test_x), np.int32),
                        num_classes=0, train_captions=train_c, test_captions=test_c)
