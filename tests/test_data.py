"""Data sources behind one interface: digits, image folders (with bad files), tensorflow-datasets."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image, ImageFile

from ar_jax.builders import make_model_config
from ar_jax.config import load_config_file
from ar_jax.data.folder import held_out_files
from ar_jax.data.sources import fit_image, get_dataset
from ar_jax.data.tfds_source import from_builder
from tests.helpers import FakeBuilder, tfds_config

CLASSES = ("ant", "bee", "cat")


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array).save(path)
    return path


def make_folder(root: Path, per_class: int = 12, shape=(8, 8, 3), start: int = 0) -> Path:
    """`root/<class>/<i>.png`, random pixels except pixel (0, 0) = (class id, i, 7): an identity per image."""
    rng = np.random.default_rng(start)
    for label, name in enumerate(CLASSES):
        for i in range(start, start + per_class):
            img = rng.integers(0, 256, shape, dtype=np.uint8)
            img[0, 0, :3] = (label, i, 7)
            write_png(root / name / f"{i:03d}.png", img)
    return root


def folder_config(path, **overrides) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(dict(name="folder", path=str(path), image_shape=(8, 8, 3), num_classes=3,
                                       test_fraction=0.25, on_bad_file="skip", resize=False))
    c.update(overrides)
    return c


def ids(images: np.ndarray) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in images[:, 0, 0, :2]}


def add_bad_files(root: Path) -> dict[str, Path]:
    """One file of each kind that a folder of 8x8 RGB images must not use as is."""
    rng = np.random.default_rng(1)
    good = write_png(root / "zz.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).read_bytes()
    (root / "zz.png").unlink()
    bad = {"truncated": root / "ant" / "half.png", "text": root / "bee" / "x.png",
           "grey": write_png(root / "cat" / "grey.png", rng.integers(0, 256, (8, 8), dtype=np.uint8)),
           "size": write_png(root / "ant" / "big.png", rng.integers(0, 256, (10, 12, 3), dtype=np.uint8))}
    bad["truncated"].write_bytes(good[: len(good) // 2])
    bad["text"].write_text("this is not a picture\n")
    return bad


def test_digits_source_keeps_its_split():
    data = get_dataset(ml_collections.ConfigDict({"name": "digits"}))
    assert data.train_images.shape == (1500, 8, 8, 1) and data.test_images.shape == (297, 8, 8, 1)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int32
    assert data.num_classes == 10


def test_unknown_source_lists_the_known_ones():
    known = r"\['caption_folder', 'digits', 'folder', 'scenes', 'shapes', 'tfds'\]"
    with pytest.raises(ValueError, match=r"'nope'.*" + known):
        get_dataset(ml_collections.ConfigDict({"name": "nope"}))


def test_folder_yields_configured_arrays_with_labels_from_sorted_subfolders(tmp_path):
    make_folder(tmp_path)
    data = get_dataset(folder_config(tmp_path))
    assert data.num_classes == 3 and data.image_shape == (8, 8, 3)
    for x, y in ((data.train_images, data.train_labels), (data.test_images, data.test_labels)):
        assert x.dtype == np.uint8 and y.dtype == np.int32 and len(x) == len(y) > 0
        np.testing.assert_array_equal(x[:, 0, 0, 0], y)  # pixel (0, 0) carries the class id
        assert y.min() >= 0 and y.max() < 3
    assert len(data.train_images) + len(data.test_images) == 36
    # pixels come back exactly as written
    assert len(data.test_images) == 9  # round(0.25 * 36)
    first = np.asarray(Image.open(tmp_path / "ant" / "000.png"))
    relpaths = [f"{c}/{i:03d}.png" for c in CLASSES for i in range(12)]
    where = data.test_images if "ant/000.png" in held_out_files(relpaths, 0.25) else data.train_images
    assert any(np.array_equal(first, img) for img in where)


def test_folder_split_is_fixed_and_disjoint_and_ignores_bad_files(tmp_path):
    make_folder(tmp_path, per_class=20)
    a, b = get_dataset(folder_config(tmp_path)), get_dataset(folder_config(tmp_path))
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)
    assert not ids(a.train_images) & ids(a.test_images) and len(a.test_images) == 15
    (tmp_path / "bee" / "003.png").write_bytes(b"now broken")  # a file going bad moves no other file
    c = get_dataset(folder_config(tmp_path))
    assert ids(c.test_images) | ids(c.train_images) == (ids(a.test_images) | ids(a.train_images)) - {(1, 3)}
    assert ids(c.test_images) <= ids(a.test_images) and ids(c.train_images) <= ids(a.train_images)
    relpaths = [f"{i}.png" for i in range(10)]
    assert len(held_out_files(relpaths, 0.01)) == 1 and len(held_out_files(relpaths, 0.99)) == 9
    assert held_out_files(relpaths, 0.3) == held_out_files(relpaths[::-1], 0.3)


def test_folder_skips_bad_files_with_count_and_paths_in_the_log(tmp_path, caplog):
    make_folder(tmp_path)
    bad = add_bad_files(tmp_path)
    (tmp_path / "cat" / "notes.txt").write_text("not an image extension")
    with caplog.at_level(logging.WARNING):
        data = get_dataset(folder_config(tmp_path))
    assert len(data.train_images) + len(data.test_images) == 36  # only the good ones
    log = caplog.text
    assert "skipped 4 bad image files of 40" in log
    for path in bad.values():
        assert str(path) in log
    assert "mode 'L'" in log and "size 10x12" in log and "Truncated" in log
    assert "ignored 1 files" in log and "notes.txt" in log


@pytest.mark.parametrize("kind, reason", [("truncated", "(?i)truncated"), ("text", "not a readable image"),
                                          ("grey", "mode 'L'"), ("size", "size 10x12")])
def test_folder_bad_file_error_names_the_file_and_the_problem(tmp_path, kind, reason):
    make_folder(tmp_path, per_class=2)
    bad = add_bad_files(tmp_path)
    path = bad.pop(kind)
    for other in bad.values():
        other.unlink()
    with pytest.raises(ValueError, match=reason) as e:
        get_dataset(folder_config(tmp_path, on_bad_file="error"))
    assert str(path) in str(e.value)


def test_truncated_file_is_caught_even_when_pil_tolerance_is_switched_on(tmp_path, monkeypatch):
    make_folder(tmp_path, per_class=2)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    path = tmp_path / "bee" / "cut.jpg"  # header intact, pixels cut: only a full decode notices
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 7 // 10])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some other library might
    with pytest.raises(ValueError, match="(?i)truncated") as e:
        get_dataset(folder_config(tmp_path, on_bad_file="error", resize=True))
    assert str(path) in str(e.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored for whoever switched it on


def test_folder_resize_converts_mode_and_centre_crops(tmp_path):
    make_folder(tmp_path, per_class=4)
    add_bad_files(tmp_path)["truncated"].unlink()
    (tmp_path / "bee" / "x.png").unlink()
    wide = np.zeros((16, 32, 3), np.uint8)
    wide[:, :8], wide[:, 8:24], wide[:, 24:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    write_png(tmp_path / "cat" / "wide.png", wide)
    data = get_dataset(folder_config(tmp_path, resize=True))
    assert data.train_images.shape[1:] == data.test_images.shape[1:] == (8, 8, 3)
    assert len(data.train_images) + len(data.test_images) == 15  # 12 + grey + wrong size + wide
    centre = fit_image(Image.fromarray(wide), 8, 8, "RGB")[:, 1:7]  # 16x32 -> 8x16 -> middle 8 columns
    np.testing.assert_array_equal(centre, np.full((8, 6, 3), (0, 255, 0)))
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    np.testing.assert_array_equal(fit_image(Image.fromarray(grey), 8, 8, "RGB"), np.repeat(grey[..., None], 3, -1))
    assert fit_image(Image.fromarray(wide), 5, 7, "L").shape == (5, 7, 1)


def test_folder_grey_images(tmp_path):
    for label, name in enumerate(CLASSES[:2]):
        for i in range(6):
            write_png(tmp_path / name / f"{i}.png", np.full((4, 4, 1), 10 * i + label, np.uint8))
    data = get_dataset(folder_config(tmp_path, image_shape=(4, 4, 1), num_classes=2, test_fraction=0.3))
    assert data.image_shape == (4, 4, 1) and data.num_classes == 2
    np.testing.assert_array_equal(data.train_images[:, 0, 0, 0] % 10, data.train_labels)


def test_missing_or_empty_folders_are_errors_naming_the_folder(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path / "nowhere")):
        get_dataset(folder_config(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=f"{tmp_path}.*no class subfolders"):
        get_dataset(folder_config(tmp_path))
    (tmp_path / "ant").mkdir()
    (tmp_path / "ant" / "readme.txt").write_text("hi")
    with pytest.raises(ValueError, match=f"{tmp_path}.*no image files"):
        get_dataset(folder_config(tmp_path))
    (tmp_path / "ant" / "x.png").write_text("not a picture")
    with pytest.raises(ValueError, match=f"{tmp_path}.*no usable train images"):
        get_dataset(folder_config(tmp_path))


def test_folder_config_fields_are_checked(tmp_path):
    config = folder_config(tmp_path)
    del config["path"]
    with pytest.raises(ValueError, match=r"config.data.path is required for name='folder'"):
        get_dataset(config)
    make_folder(tmp_path, per_class=2)
    with pytest.raises(ValueError, match="on_bad_file='ignore'"):
        get_dataset(folder_config(tmp_path, on_bad_file="ignore"))
    with pytest.raises(ValueError, match="test_fraction=0.0"):
        get_dataset(folder_config(tmp_path, test_fraction=0.0))
    with pytest.raises(ValueError, match=r"image_shape=\(8, 8, 2\)"):
        get_dataset(folder_config(tmp_path, image_shape=(8, 8, 2)))


def test_folder_pixels_config_matches_the_trainers_check(tmp_path):
    make_folder(tmp_path / "imgs", per_class=10, shape=(16, 16, 3))
    config = load_config_file("configs/folder_pixels.py:smoke")
    config.data.path, config.data.num_classes = str(tmp_path / "imgs"), 3
    data = get_dataset(config.data)
    assert data.image_shape == tuple(config.data.image_shape) and data.num_classes == config.data.num_classes
    for variant in ("", ":smoke"):  # the model the config describes is valid (e.g. RoPE fits the token grid)
        make_model_config(load_config_file(f"configs/folder_pixels.py{variant}"))


# --- tensorflow-datasets: the fitting and label logic through a fake builder (no tfds needed) ---


def examples(n, shape, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return [{"image": rng.integers(0, 256, shape, dtype=np.uint8), "label": np.int64(i % num_classes)}
            for i in range(n)]


def test_tfds_from_builder_fits_images_to_the_configured_shape():
    grey = examples(5, (28, 28, 1))
    wide = examples(3, (20, 40, 3), seed=1)
    data = from_builder(FakeBuilder({"train": grey, "test": wide}), tfds_config())
    assert data.train_images.shape == (5, 16, 16, 3) and data.test_images.shape == (3, 16, 16, 3)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int32
    np.testing.assert_array_equal(data.train_labels, [0, 1, 2, 0, 1])
    assert data.num_classes == 3
    assert (data.train_images[..., 0] == data.train_images[..., 2]).all()  # grey -> RGB: equal channels
    expected = fit_image(Image.fromarray(wide[0]["image"]), 16, 16, "RGB")
    np.testing.assert_array_equal(data.test_images[0], expected)
    same = from_builder(FakeBuilder({"train": grey, "test": grey}), tfds_config(image_shape=(28, 28, 1)))
    np.testing.assert_array_equal(same.train_images, np.stack([e["image"] for e in grey]))  # no resampling


def test_tfds_from_builder_errors():
    good = examples(2, (8, 8, 3))
    with pytest.raises(ValueError, match=r"labels in 0..4, outside 0..2"):
        from_builder(FakeBuilder({"train": examples(5, (8, 8, 3), num_classes=5), "test": good}), tfds_config())
    with pytest.raises(ValueError, match=r"split 'validation' \(config.data.tfds_test_split\).*'train', 'test'"):
        from_builder(FakeBuilder({"train": good, "test": good}), tfds_config(tfds_test_split="validation"))
    with pytest.raises(ValueError, match="needs 'image' and 'label'"):
        from_builder(FakeBuilder({"train": good}, features=("image",)), tfds_config())
    with pytest.raises(ValueError, match="convert_format"):
        from_builder(FakeBuilder({}, error=NotImplementedError("tfrecord")), tfds_config())
    with pytest.raises(ValueError, match="has no examples"):
        from_builder(FakeBuilder({"train": [], "test": good}), tfds_config())


def test_tfds_config_fields_and_missing_package(monkeypatch):
    config = tfds_config()
    del config["tfds_name"]
    with pytest.raises(ValueError, match=r"config.data.tfds_name is required for name='tfds'"):
        get_dataset(config)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    with pytest.raises(ImportError, match=r"needs tensorflow-datasets: pip install -e '.\[tfds\]'"):
        get_dataset(tfds_config())


# --- tensorflow-datasets itself (run where it is installed; TensorFlow is never needed) ---


def test_tfds_mock_data_mnist_and_imagenet():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        mnist = get_dataset(tfds_config(tfds_download=True))
        imagenet = get_dataset(tfds_config(tfds_name="imagenet2012", tfds_test_split="validation",
                                           image_shape=(8, 8, 3), tfds_download=True))
    assert mnist.train_images.shape == (4, 16, 16, 3) and mnist.num_classes == 10
    assert imagenet.test_images.shape == (4, 8, 8, 3) and imagenet.num_classes == 1000
    for data in (mnist, imagenet):
        assert data.train_images.dtype == np.uint8 and data.test_labels.dtype == np.int32
        assert 0 <= data.train_labels.min() and data.train_labels.max() < data.num_classes


def test_tfds_reads_a_dataset_prepared_on_disk(tmp_path):
    """A real array_record dataset written by tfds (images given as PNG bytes, so no TensorFlow is needed)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    rng = np.random.default_rng(0)
    pictures = {s: [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(n)]
                for s, n in (("train", 7), ("test", 3))}

    def png(array):
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, "PNG")
        return buf.getvalue()

    class ArJaxTinyImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = {"image": tfds.features.Image(shape=(None, None, 3)),
                        "label": tfds.features.ClassLabel(num_classes=3)}
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

        def _split_generators(self, dl_manager):
            return {s: self._generate_examples(s) for s in pictures}

        def _generate_examples(self, split):
            for i, p in enumerate(pictures[split]):
                yield i, {"image": png(p), "label": i % 3}

    ArJaxTinyImages(data_dir=tmp_path, file_format="array_record").download_and_prepare()
    config = tfds_config(tfds_name="ar_jax_tiny_images", tfds_data_dir=str(tmp_path), image_shape=(8, 8, 3))
    data = get_dataset(config)
    assert data.num_classes == 3 and data.train_images.shape == (7, 8, 8, 3)
    assert sorted(map(bytes, data.test_images)) == sorted(map(bytes, pictures["test"]))  # exact pixels
    np.testing.assert_array_equal(np.sort(data.train_labels), np.sort(np.arange(7) % 3))
    with pytest.raises(ValueError, match="not prepared.*tfds_download=True"):
        get_dataset(tfds_config(tfds_data_dir=str(tmp_path / "empty")))
    with pytest.raises(ValueError, match="'no_such_set_xyz' is neither"):
        get_dataset(tfds_config(tfds_name="no_such_set_xyz", tfds_data_dir=str(tmp_path)))
