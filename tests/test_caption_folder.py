"""The caption_folder source: images with captions from captions.jsonl or a .txt beside each; bad captions skipped."""

import json
import logging
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

from ar_jax.data.sources import get_dataset


def write_png(path: Path, value: int) -> Path:
    """An 8x8 RGB image whose pixels all hold `value` (so a test can pair it with its caption)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


def folder_config(path, captions, **overrides) -> ml_collections.ConfigDict:
    c = dict(name="caption_folder", path=str(path), captions=captions, image_shape=(8, 8, 3), test_fraction=0.25,
             on_bad_file="skip", resize=False)
    c.update(overrides)
    return ml_collections.ConfigDict(c)


def pairs(data) -> set[tuple[int, str]]:
    return {(int(x[0, 0, 0]), c) for images, caps in ((data.train_images, data.train_captions),
                                                      (data.test_images, data.test_captions))
            for x, c in zip(images, caps)}


def make_jsonl(root: Path, n: int = 12) -> list[str]:
    lines = []
    for i in range(n):
        rel = f"{'ab'[i % 2]}/img{i:02d}.png"
        write_png(root / rel, 10 * i)
        lines.append(json.dumps({"file": rel, "caption": f"picture number {i}"}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return lines


def test_jsonl_pairs_each_image_with_its_caption_in_a_fixed_split(tmp_path):
    make_jsonl(tmp_path)
    data = get_dataset(folder_config(tmp_path, "jsonl"))
    assert pairs(data) == {(10 * i, f"picture number {i}") for i in range(12)}
    assert len(data.test_images) == 3 and data.num_classes == 0 and not data.train_labels.any()
    again = get_dataset(folder_config(tmp_path, "jsonl"))
    np.testing.assert_array_equal(again.test_images, data.test_images)
    assert again.test_captions == data.test_captions


def test_jsonl_bad_and_missing_captions_are_skipped_counted_and_named(tmp_path, caplog):
    lines = make_jsonl(tmp_path)
    lines[1] = json.dumps({"file": "b/img01.png", "caption": "   "})  # empty
    lines[2] = json.dumps({"file": "a/img02.png"})  # no caption
    lines[3] = "{not json"  # img03 then has no caption at all
    lines.append(json.dumps({"file": "a/gone.png", "caption": "a missing file"}))
    lines.append(json.dumps({"file": "a/img04.png", "caption": "again"}))  # twice: both dropped
    lines.append(json.dumps({"file": "a/corrupt.png", "caption": "a caption for a broken file"}))
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    write_png(tmp_path / "a" / "corrupt.png", 0).write_bytes(b"broken")
    with caplog.at_level(logging.WARNING):
        data = get_dataset(folder_config(tmp_path, "jsonl"))
    assert {v for v, _ in pairs(data)} == {10 * i for i in range(12)} - {10, 20, 30, 40}
    log = caplog.text
    assert "skipped 7 bad image files or captions (13 images)" in log
    for name, why in (("img01.png", "empty or missing caption"), ("img02.png", "empty or missing caption"),
                      ("captions.jsonl:4", "not valid JSON"), ("img03.png", "no caption in captions.jsonl"),
                      ("gone.png", "no such file"), ("img04.png", "captioned again"),
                      ("corrupt.png", "not a readable image")):
        assert name in log and why in log, (name, why)


def test_txt_captions_beside_images_with_missing_and_empty_ones_skipped(tmp_path, caplog):
    for i in range(16):
        p = write_png(tmp_path / f"d{i % 3}" / f"{i}.png", 10 * i)
        if i not in (4, 7):
            p.with_suffix(".txt").write_text(f"  caption\n{i}  " if i != 5 else " \n ")
    (tmp_path / "readme.md").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        data = get_dataset(folder_config(tmp_path, "txt"))
    assert pairs(data) == {(10 * i, f"caption {i}") for i in range(16) if i not in (4, 5, 7)}
    assert "skipped 3 bad image files or captions (16 images)" in caplog.text
    assert "4.png (no caption file 4.txt" in caplog.text and "5.png (empty caption file 5.txt)" in caplog.text
    assert "ignored 1 files" in caplog.text and "readme.md" in caplog.text


@pytest.mark.parametrize("captions, breaks, reason", [
    ("txt", lambda root: (root / "b" / "img03.txt").unlink(), "img03.png: no caption file img03.txt"),
    ("txt", lambda root: (root / "b" / "img03.txt").write_text(""), "img03.png: empty caption file"),
    ("jsonl", lambda root: (root / "captions.jsonl").write_text('{"file": "b/img03.png", "caption": ""}\n'),
     "img03.png: empty or missing caption on captions.jsonl line 1"),
    ("jsonl", lambda root: (root / "b" / "img03.png").write_bytes(b"broken"), "img03.png: not a readable image"),
])
def test_error_mode_names_the_file_and_the_fix(tmp_path, captions, breaks, reason):
    make_jsonl(tmp_path, n=6)
    for p in tmp_path.rglob("*.png"):
        p.with_suffix(".txt").write_text("a caption")
    breaks(tmp_path)
    with pytest.raises(ValueError, match=reason) as e:
        get_dataset(folder_config(tmp_path, captions, on_bad_file="error"))
    assert "on_bad_file='skip'" in str(e.value)


def test_config_errors_say_what_to_set(tmp_path):
    write_png(tmp_path / "x.png", 0)
    with pytest.raises(ValueError, match=r"config.data.captions='csv'.*'jsonl'.*'txt'"):
        get_dataset(folder_config(tmp_path, "csv"))
    with pytest.raises(ValueError, match=r"captions.jsonl does not exist"):
        get_dataset(folder_config(tmp_path, "jsonl"))
    with pytest.raises(ValueError, match="config.data.captions is required"):
        get_dataset(ml_collections.ConfigDict({k: v for k, v in folder_config(tmp_path, "txt").items()
                                               if k != "captions"}))
