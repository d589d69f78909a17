"""TensorFlow Datasets by name (mnist, cifar10, imagenet2012, ...), read without TensorFlow.

Reading goes through tfds's random-access `as_data_source` over array_record files, which needs the
`tensorflow-datasets` package but not TensorFlow; downloading and preparing a dataset (the first run) needs
TensorFlow too. Images are converted to the configured channels and resized (shorter side) + centre-cropped to
`config.data.image_shape`. `config.data` fields: `tfds_name`, `tfds_data_dir`, `tfds_manual_dir`,
`tfds_download`, `tfds_train_split`, `tfds_test_split`, `image_shape`.

The dataset is held in memory as uint8 `[N, H, W, C]`: for big datasets pick a slice, e.g.
`--config.data.tfds_train_split='train[:10%]'`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
from PIL import Image

from ar_jax.data.sources import ImageDataset, fit_image, image_size_and_mode, require

INSTALL = "pip install -e '.[tfds]' (tensorflow-datasets)"
ARRAY_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # PIL mode of a uint8 [h, w, c] image array


def import_tfds() -> Any:
    """The `tensorflow_datasets` module, or an ImportError that says what to install."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(f"config.data.name='tfds' needs tensorflow-datasets: {INSTALL}, or pip install "
                          f"tensorflow-datasets tensorflow (TensorFlow only to download and prepare). ({e})") from e
    return tfds


def make_builder(data_config: ml_collections.ConfigDict) -> Any:
    """The tfds builder for `config.data.tfds_name`, prepared in array_record format (downloading if allowed)."""
    name = require(data_config, "tfds_name")
    data_dir = require(data_config, "tfds_data_dir", allow_none=True)
    manual_dir = require(data_config, "tfds_manual_dir", allow_none=True)
    download = require(data_config, "tfds_download")
    tfds = import_tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(f"config.data.tfds_name={name!r} is neither a tensorflow-datasets dataset nor prepared "
                         f"under config.data.tfds_data_dir={data_dir!r}. {str(e).splitlines()[0]}") from None
    if builder.is_prepared():
        return builder
    if not download:
        raise ValueError(f"tfds dataset {name!r} is not prepared in {builder.data_dir}; set "
                         "config.data.tfds_download=True to download and prepare it, or config.data.tfds_data_dir "
                         "to the folder where it is prepared.")
    logging.info("downloading and preparing tfds dataset %r in %s (array_record)", name, builder.data_dir)
    try:
        builder.download_and_prepare(file_format="array_record",
                                     download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except ModuleNotFoundError as e:
        raise ImportError(f"preparing tfds dataset {name!r} needs {e.name!r}: pip install tensorflow "
                          f"{e.name or ''} (reading it afterwards does not need TensorFlow). ({e})") from e
    return builder


def image_array_to_pil(array: np.ndarray) -> Image.Image:
    """A uint8 image `[h, w]` or `[h, w, c]` (c = 1, 3, 4) as a PIL image."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in ARRAY_MODES:
        raise ValueError(f"image of dtype {array.dtype} and shape {array.shape}; expected uint8 [h, w, 1|3|4].")
    mode = ARRAY_MODES[array.shape[2]]
    return Image.fromarray(array[..., 0] if mode == "L" else array, mode)


def read_split(source: Sequence[Mapping[str, Any]], height: int, width: int, mode: str, num_classes: int,
               what: str) -> tuple[np.ndarray, np.ndarray]:
    """Examples `{"image": uint8 [h, w, c], "label": int}` -> images uint8 `[N, H, W, C]`, labels int32 `[N]`."""
    n = len(source)
    if n == 0:
        raise ValueError(f"{what} has no examples.")
    logging.info("reading %d examples of %s", n, what)
    images = np.empty((n, height, width, len(mode)), np.uint8)  # len("L") = 1, len("RGB") = 3 channels
    labels = np.empty(n, np.int32)
    for i in range(n):
        example = source[i]
        try:
            images[i] = fit_image(image_array_to_pil(example["image"]), height, width, mode)
        except ValueError as e:
            raise ValueError(f"{what}, example {i}: {e}") from None
        labels[i] = int(example["label"])
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"{what} has labels in {labels.min()}..{labels.max()}, outside 0..{num_classes - 1}.")
    return images, labels


def from_builder(builder: Any, data_config: ml_collections.ConfigDict) -> ImageDataset:
    """The train/test splits of a prepared tfds builder (or any object with `.info.features["label"].num_classes`
    and `.as_data_source(split)` -> a sequence of `{"image", "label"}` examples), fitted to `image_shape`."""
    height, width, mode = image_size_and_mode(data_config)
    name = getattr(builder, "name", "tfds dataset")
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise ValueError(f"tfds dataset {name!r} has features {list(features.keys())}; this source needs 'image' "
                         "and 'label' (a class-labelled image dataset).")
    num_classes = int(features["label"].num_classes)
    arrays = []
    for key in ("tfds_train_split", "tfds_test_split"):
        split = require(data_config, key)
        what = f"tfds dataset {name!r} split {split!r} (config.data.{key})"
        try:
            source = builder.as_data_source(split=split)
        except NotImplementedError:
            raise ValueError(f"tfds dataset {name!r} is prepared in {builder.data_dir} in a format without random "
                             "access (tfrecord), which this reader (no TensorFlow) cannot read. Convert it: tfds "
                             f"convert_format --dataset_version_dir={builder.data_dir} --out_file_format=array_record "
                             "(needs tensorflow), or prepare it afresh in another config.data.tfds_data_dir with "
                             "config.data.tfds_download=True.") from None
        except (ValueError, KeyError) as e:
            raise ValueError(f"{what} cannot be read: {e}. Its splits: {list(builder.info.splits)}.") from None
        arrays.append(read_split(source, height, width, mode, num_classes, what))
    (train_x, train_y), (test_x, test_y) = arrays
    return ImageDataset(train_x, train_y, test_x, test_y, num_classes=num_classes)


def tfds_dataset(data_config: ml_collections.ConfigDict) -> ImageDataset:
    """The dataset `config.data.tfds_name` as uint8 `[N, H, W, C]` images and int32 labels (train and test)."""
    image_size_and_mode(data_config)  # config errors before any import or download
    for key in ("tfds_train_split", "tfds_test_split"):
        require(data_config, key)
    return from_builder(make_builder(data_config), data_config)
