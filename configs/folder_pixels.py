"""Class-conditional pixel transformer on a folder of RGB images, one subfolder per class (ar_jax/data/folder.py).

    python train.py --config configs/folder_pixels.py --workdir runs/folder \
        --config.data.path=/path/to/images --config.data.num_classes=NUM_SUBFOLDERS

Images must be 16x16 RGB, or set --config.data.resize=true to resize (shorter side) and centre-crop any image.
Bad files (unreadable, truncated, wrong mode or size) are skipped and named in the log; set
--config.data.on_bad_file=error to stop at the first one. 10% of the files, picked by a hash of their paths, are the
test set (the same files every run). `configs/folder_pixels.py:smoke` shrinks everything for tests.
"""

from pathlib import Path

import ml_collections

from ar_jax.config import load_config_file


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    """configs/digits_pixels.py (same variant) with the data, tokenizer, RoPE and EMA sections replaced."""
    if variant not in (None, "smoke"):
        raise ValueError(f"unknown variant {variant!r} of folder_pixels; use 'smoke' or none.")
    spec = str(Path(__file__).with_name("digits_pixels.py")) + (f":{variant}" if variant else "")
    c = load_config_file(spec)
    c.unlock()
    c.data = ml_collections.ConfigDict()
    c.data.name = "folder"  # image source (ar_jax/data/sources.py): one subfolder of images per class
    c.data.path = "data/images"  # placeholder: the folder, set with --config.data.path
    c.data.image_shape = (16, 16, 3)  # H, W, C of the images (C = 1: mode "L", 3: mode "RGB")
    c.data.num_classes = 2  # number of class subfolders (checked against the folder)
    c.data.test_fraction = 0.1  # share of files held out as the test set (picked by a hash of their paths)
    c.data.on_bad_file = "skip"  # "skip": bad files are skipped and logged; "error": stop at the first
    c.data.resize = False  # True: convert mode, resize (shorter side) and centre-crop; False: bad if not exact
    c.tokenizer.levels = 8  # colour levels per channel (values 0..255 rounded to 8 steps)
    c.model.rope = "1d"  # rotary embedding over raster positions (2-D RoPE needs a square token grid)
    c.ema_decay = 0.0  # EMA of weights for sampling/eval (e.g. 0.999); 0 switches it off
    c.lock()
    return c
