"""The validation split: a fixed share of the training examples held out, chosen by the run's seed.

The test split is never used to choose anything (checkpoints, early stopping); the validation split is.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ar_jax.data.sources import ImageDataset

TRAIN_PREFIX = "train_"
STREAM = 0x76616C  # separates the split's random stream from the data order's (seed, epoch) streams


def train_fields(data: ImageDataset) -> list[str]:
    """Names of the dataset's per-example training fields that are set (`train_images`, `train_labels`, and any
    `train_*` field a source fills, e.g. captions); an optional field left None is not one."""
    return [f.name for f in dataclasses.fields(data)
            if f.name.startswith(TRAIN_PREFIX) and getattr(data, f.name) is not None]


def validation_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`(train, validation)` index arrays, sorted and disjoint, covering `range(n)`; a pure function of its args."""
    if not 0 <= fraction < 1:
        raise ValueError(f"config.validation_fraction={fraction} must be in [0, 1) (0: no validation split).")
    k = int(round(fraction * n))
    if fraction > 0 and not 0 < k < n:
        raise ValueError(f"config.validation_fraction={fraction} of {n} training examples holds out {k}; choose a "
                         f"fraction that leaves at least one example on each side (e.g. {1 / n:.3g} to 0.5).")
    order = np.random.default_rng([seed, STREAM]).permutation(n)
    return np.sort(order[k:]), np.sort(order[:k])


def split_validation(data: ImageDataset, fraction: float, seed: int) -> tuple[ImageDataset, dict[str, np.ndarray]]:
    """`data` with `fraction` of its training examples removed, and those examples as `{name: array}` (the field
    names without `train_`, e.g. `images [V, H, W, C]`, `labels [V]`); every `train_*` field that is set is split
    alike (one left None stays None)."""
    fields = train_fields(data)
    n = len(getattr(data, fields[0]))
    for name in fields:
        if len(getattr(data, name)) != n:
            raise ValueError(f"{name} has {len(getattr(data, name))} entries but {fields[0]} has {n}; every "
                             "train_* field of the dataset needs one entry per training example.")
    keep, held = validation_indices(n, fraction, seed)
    rest = dataclasses.replace(data, **{name: _take(getattr(data, name), keep) for name in fields})
    validation = {name[len(TRAIN_PREFIX):]: _take(getattr(data, name), held) for name in fields}
    return rest, validation


def _take(values: object, idx: np.ndarray) -> object:
    """`values[idx]` for arrays, and the same selection for a list (e.g. of captions)."""
    if isinstance(values, np.ndarray):
        return values[idx]
    return type(values)(values[i] for i in idx)
