"""Token shards and the Grain loader: round trips, host shares, iterator state, the tokenize job, bad shards."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordWriter

from ar_jax.data import pipeline, shards, tokenize
from ar_jax.data.sources import digits
from ar_jax.tokenizers.pixels import PixelTokenizer
from ar_jax.training.checkpoints import Checkpointer
from ar_jax.training.inputs import ShardInputs
from tests.helpers import smoke_config

ROOT = Path(__file__).parent.parent
PER_SHARD = 400  # digits: 1500 training images in 4 shards, 297 test images in 1


def shard_config(**overrides):
    return smoke_config(**{"loader.views": "flip", **overrides})


@pytest.fixture(scope="module")
def digit_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    tokenize.tokenize(shard_config(), out, records_per_shard=PER_SHARD)
    return out


def records(directory, split="train"):
    src = shards.ShardSource(directory, split)
    return [shards.decode_record(src[i]) for i in range(len(src))]


def test_shards_round_trip_codes_labels_and_views(digit_shards):
    data, tok = digits(), PixelTokenizer((8, 8, 1), 17)
    train = records(digit_shards)
    assert len(train) == len(data.train_images) == 1500
    assert len(list(digit_shards.glob("train-*.array_record"))) == 4
    codes = np.stack([r["codes"] for r in train])  # [N, 2, 64]: the image and its mirror
    assert codes.dtype == np.uint16 and codes.shape == (1500, 2, 64)
    np.testing.assert_array_equal(codes[:, 0], tok.encode(data.train_images))
    np.testing.assert_array_equal(codes[:, 1], tok.encode(data.train_images[:, :, ::-1]))
    np.testing.assert_array_equal([r["label"] for r in train], data.train_labels)
    test = records(digit_shards, "test")
    assert np.stack([r["codes"] for r in test]).shape == (297, 1, 64)  # the test split: the plain image only
    assert "caption" not in train[0]


def test_records_keep_captions_and_a_view_is_picked_per_example():
    codes = np.arange(3 * 4, dtype=np.uint16).reshape(3, 4)
    r = shards.decode_record(shards.encode_record(codes, 7, "a red circle left of a blue square"))
    np.testing.assert_array_equal(r["codes"], codes)
    assert (r["label"], r["caption"]) == (7, "a red circle left of a blue square")
    picked = {tuple(shards.pick_view(shards.encode_record(codes, 7), np.random.default_rng(s))["tokens"])
              for s in range(40)}
    assert picked == {tuple(c) for c in codes.astype(np.int32)}
    with pytest.raises(ValueError, match="0..65535"):
        shards.encode_record(np.array([[70000]]), 0)


def test_ten_crop_views_are_llamagens():
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), np.uint8)
    views = tokenize.image_views(image, "ten_crop", (20, 20, 3))
    assert views.shape == (10, 20, 20, 3)
    np.testing.assert_array_equal(views[5:], views[:5, :, ::-1])  # the mirrors of the five crops
    big = tokenize.image_views(image, "none", (22, 22, 3))[0]  # the 1.1x centre crop the crops come from
    np.testing.assert_array_equal(views[0], big[1:21, 1:21])  # centre first
    np.testing.assert_array_equal(views[1], big[:20, :20])  # then the corners
    np.testing.assert_array_equal(views[4], big[2:, 2:])
    flips = tokenize.image_views(image, "flip", (20, 20, 3))
    np.testing.assert_array_equal(flips[1], flips[0][:, ::-1])


def test_hosts_read_disjoint_shares_that_form_the_one_host_batches():
    source = pipeline.ArraySource({"x": np.arange(50)})
    one = pipeline.batches(source, 8, seed=3, share=(8, 0, 1))
    first = np.concatenate([one[s]["x"] for s in range(7)])[:50]  # the first epoch: every example once
    assert sorted(first.tolist()) == list(range(50))
    assert not np.array_equal(first, np.arange(50))  # shuffled
    second = np.concatenate([one[s]["x"] for s in range(13)])[50:100]
    assert sorted(second.tolist()) == list(range(50)) and not np.array_equal(first, second)  # reshuffled
    for hosts in (2, 4):
        shares = [pipeline.batches(source, 8, seed=3, share=(8 // hosts, p, hosts)) for p in range(hosts)]
        for s in range(20):
            rows = [sh[s]["x"] for sh in shares]
            np.testing.assert_array_equal(np.concatenate(rows), one[s]["x"])  # disjoint, in the same rows
    assert not np.array_equal(pipeline.batches(source, 8, seed=4, share=(8, 0, 1))[0]["x"], one[0]["x"])
    with pytest.raises(ValueError, match="no examples"):
        pipeline.batches(pipeline.ArraySource({"x": np.zeros(0)}), 8, seed=0)


def test_views_do_not_depend_on_the_number_of_hosts(digit_shards):
    inputs = ShardInputs(shard_config(**{"loader.shards": str(digit_shards)}), PixelTokenizer((8, 8, 1), 17))
    pick = lambda r, rng: shards.pick_view(r, rng)  # noqa: E731
    one = pipeline.batches(inputs.train, 8, 0, random_map=pick, share=(8, 0, 1))
    two = [pipeline.batches(inputs.train, 8, 0, random_map=pick, share=(4, p, 2)) for p in range(2)]
    for s in range(5):
        np.testing.assert_array_equal(np.concatenate([t[s]["tokens"] for t in two]), one[s]["tokens"])


@pytest.mark.parametrize("workers", [0, 1])
def test_iterator_state_saved_in_a_checkpoint_gives_the_same_batches(tmp_path, workers):
    source = pipeline.ArraySource({"x": np.arange(37), "y": np.arange(37) * 10})
    ds = pipeline.batches(source, 4, seed=0, random_map=lambda e, rng: {**e, "r": rng.integers(1000)})
    straight = pipeline.iterator(ds, read_threads=2, prefetch=3, workers=workers)
    ref = [next(straight) for _ in range(25)]
    it = pipeline.iterator(ds, read_threads=2, prefetch=3, workers=workers)
    for _ in range(11):
        next(it)
    ckpt = Checkpointer(tmp_path)
    ckpt.save(11, {"w": jax.numpy.zeros(2)}, data=pipeline.DataState(it))
    ckpt.wait()
    next(it)  # the iterator moves on; the checkpoint keeps step 11's position
    assert (tmp_path / "checkpoints/11/data/process_0-of-1.json").is_file()
    fresh = pipeline.iterator(ds, read_threads=2, prefetch=3, workers=workers)
    assert ckpt.restore_data(11, fresh)
    for want in ref[11:]:
        jax.tree.map(np.testing.assert_array_equal, next(fresh), want)
    assert not ckpt.restore_data(12, fresh)  # no such step: the caller is told
    ckpt.close()
    skipped = pipeline.iterator(ds, read_threads=2, prefetch=3, workers=workers)
    pipeline.skip(skipped, 7)  # a checkpoint without the loader's state: positioned by its step
    jax.tree.map(np.testing.assert_array_equal, next(skipped), ref[7])


def test_shards_of_another_tokenizer_are_refused(digit_shards):
    config = shard_config(**{"loader.shards": str(digit_shards)})
    with pytest.raises(ValueError, match=r"index.json was written by a tokenizer with code count 17, but the "
                                         r"config's tokenizer has 9.*rewrite them"):
        ShardInputs(config, PixelTokenizer((8, 8, 1), 9))
    with pytest.raises(ValueError, match=r"grid \[8, 8\], but the config's tokenizer has \[4, 16\]"):
        ShardInputs(config, type("T", (), {"vocab_size": 17, "seq_len": 64, "grid": (4, 16)})())
    other = shard_config(**{"loader.shards": str(digit_shards), "data.num_classes": 5})
    with pytest.raises(ValueError, match=r"holds images \(8, 8, 1\) with 10 classes, but config.data says"):
        ShardInputs(other, PixelTokenizer((8, 8, 1), 17))


def copy_shards(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_corrupt_empty_and_unfinished_shard_directories_name_the_file_and_the_fix(digit_shards, tmp_path):
    with pytest.raises(ValueError, match=r"is missing or empty; write it with python -m ar_jax.data.tokenize"):
        shards.ShardSource(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty.*python -m ar_jax.data.tokenize"):
        shards.ShardSource(tmp_path / "empty")

    cut = copy_shards(digit_shards, tmp_path / "cut")
    shard = cut / "train-00002-of-00004.array_record"
    shard.write_bytes(shard.read_bytes()[:3000])  # truncated
    with pytest.raises(ValueError, match=rf"shard {shard} is corrupt: it holds no readable records \(ArrayRecord "
                                         r"file should be at least 64KB big\) but its train-00002-of-00004"
                                         r".array_record.done.json says 375. Delete both"):
        shards.ShardSource(cut)

    flipped = copy_shards(digit_shards, tmp_path / "flipped")
    shard = flipped / "train-00001-of-00004.array_record"
    data = bytearray(shard.read_bytes())
    data[600:640] = b"x" * 40  # a damaged chunk: found when its record is read
    shard.write_bytes(bytes(data))
    src = shards.ShardSource(flipped)
    with pytest.raises(ValueError, match=rf"shard {shard} is corrupt: record \d+ cannot be read"):
        [src[i] for i in range(375, 750)]

    unfinished = copy_shards(digit_shards, tmp_path / "unfinished")
    (unfinished / "train-00003-of-00004.array_record.done.json").unlink()
    with pytest.raises(ValueError, match=r"train-00003-of-00004.array_record is not finished .*rerun python -m"):
        shards.ShardSource(unfinished)

    stray = tmp_path / "stray"
    stray.mkdir()
    writer = ArrayRecordWriter(str(stray / "train-00000-of-00001.array_record"), "group_size:1")
    writer.close()
    with pytest.raises(ValueError, match=r"stray/index.json cannot be read"):
        shards.ShardSource(stray)


def test_tokenize_killed_mid_shard_then_rerun_writes_the_same_shards(digit_shards, tmp_path):
    out = tmp_path / "resumed"
    cmd = [sys.executable, str(ROOT / "tests/tokenize_run.py"), str(out), str(PER_SHARD), "700"]
    killed = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL inside the second shard
    done = sorted(p.name for p in out.glob("*.done.json"))
    assert done == ["train-00000-of-00004.array_record.done.json"]
    rerun = subprocess.run(cmd[:-1] + ["0"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    names = sorted(p.name for p in digit_shards.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        assert (out / name).read_bytes() == (digit_shards / name).read_bytes(), name


def test_processes_split_the_shards_and_together_write_them_all(digit_shards, tmp_path):
    out = tmp_path / "split"
    tokenize.tokenize(shard_config(), out, records_per_shard=PER_SHARD, process_index=1, process_count=2)
    assert sorted(p.name for p in out.glob("*.done.json")) == [
        "train-00001-of-00004.array_record.done.json", "train-00003-of-00004.array_record.done.json"]
    tokenize.tokenize(shard_config(), out, records_per_shard=PER_SHARD, process_index=0, process_count=2)
    for name in os.listdir(digit_shards):
        assert (out / name).read_bytes() == (digit_shards / name).read_bytes(), name
    with pytest.raises(ValueError, match="describes other shards"):
        tokenize.tokenize(shard_config(**{"loader.views": "none"}), out, records_per_shard=PER_SHARD)
    assert json.loads((out / "index.json").read_text())["views"] == {"train": "flip", "test": "none"}
