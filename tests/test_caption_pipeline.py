"""A run trained both ways end to end: configs/scenes_any.py:smoke trains, then `pipe.caption`, `pipe.caption_logprob`,
`sample.py --caption`, text-to-image on the same run, and the inputs they refuse."""

import json

import jax
import numpy as np
import pytest

import ar_jax
from ar_jax import cli
from ar_jax.config import load_config_file
from ar_jax.data.scenes import generate
from ar_jax.images import save_png
from ar_jax.pipeline import ARPipeline
from tests.helpers import train_both_ways_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The smoke tokenizer and the smoke both-ways run trained on it (4 steps): `(workdir, pipe)`."""
    workdir = train_both_ways_run(tmp_path_factory.mktemp("any"))
    return workdir, ar_jax.load(workdir)


def test_the_run_logs_both_modalities(run):
    workdir, _ = run
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert any("text_loss" in r and "image_loss" in r for r in rows)
    assert any("test_caption_nll" in r and "test_bits_per_dim" in r for r in rows)


def test_captions_ranks_and_images_from_one_run(run):
    _, pipe = run
    images, captions, _ = generate(3, seed=1)
    out = pipe.caption(images)
    assert isinstance(out, list) and len(out) == 3 and all(isinstance(c, str) for c in out)
    assert pipe.caption(list(images), seed=5) == out  # greedy: the seed does not matter, a list of images works
    sampled = pipe.caption(images, greedy=False, temperature=0.8, top_k=5, top_p=0.9, seed=1)
    assert sampled == pipe.caption(images, greedy=False, temperature=0.8, top_k=5, top_p=0.9, seed=1)
    logp = pipe.caption_logprob(images, captions)
    assert logp.shape == (3,) and np.isfinite(logp).all() and (logp < 0).all()
    assert pipe.bits_per_dim(images, prompts=captions).shape == (3,)  # p(image | caption) as before
    assert pipe.sample(prompts=["a red circle"], seed=0).shape == (1, 32, 32, 3)


def test_caption_logprob_of_the_decoded_ids(run):
    """`caption(..., return_logprob=True)` scores the ids it decoded: equal to `caption_logprob` of the text where the
    text re-encodes to those ids (sampled text from a 4-step model need not)."""
    _, pipe = run
    images, _, _ = generate(4, seed=2)
    for greedy in (True, False):
        texts, logp = pipe.caption(images, seed=3, greedy=greedy, return_logprob=True)
        assert texts == pipe.caption(images, seed=3, greedy=greedy) and logp.shape == (4,) and (logp < 0).all()
        ok = [i for i, t in enumerate(texts)
              if t and len(pipe.text_tokenizer.encode([t])[0]) <= pipe.model_config.text_len]
        if greedy:
            assert ok
        if ok:
            np.testing.assert_allclose(logp[ok], pipe.caption_logprob(images[ok], [texts[i] for i in ok]),
                                       rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("images,match", [
    (np.zeros((2, 16, 16, 3), np.uint8), r"shape \(2, 16, 16, 3\); this run takes uint8 images \[B >= 1, 32, 32, 3\]"),
    (np.zeros((2, 32, 32, 1), np.uint8), r"\(32x32, 3 channels\)"),
    ([np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 4), np.uint8)], r"image 1 has shape \(32, 32, 4\)"),
    ([], "no images given"),
    (np.zeros((0, 32, 32, 3), np.uint8), r"\[B >= 1, 32, 32, 3\]"),
    (np.zeros((1, 32, 32, 3), np.float32), "dtype float32; pass uint8"),
])
def test_bad_images_are_refused(run, images, match):
    _, pipe = run
    with pytest.raises(ValueError, match=match):
        pipe.caption(images)
    with pytest.raises(ValueError, match=match):
        pipe.caption_logprob(images, ["a red circle"] * max(len(images), 1))


def test_captions_must_match_the_images(run):
    _, pipe = run
    images = generate(2, seed=1)[0]
    with pytest.raises(ValueError, match="got 2 images but 1 captions"):
        pipe.caption_logprob(images, ["a red circle"])
    with pytest.raises(ValueError, match="got 2 images but 1 captions"):
        pipe.caption_logprob(images, "a red circle")
    with pytest.raises(ValueError, match="more than max_len=10"):
        pipe.caption_logprob(images, ["a red circle left of a blue square and a green triangle"] * 2)


def test_a_run_trained_one_way_refuses_to_caption(run):
    _, pipe = run
    config = load_config_file("configs/scenes_t2i.py:smoke")
    config.unlock()
    config.tokenizer.workdir = pipe.config.tokenizer.workdir
    config.lock()
    t2i = ARPipeline(config, None, tokenizer=pipe.tokenizer, text_tokenizer=pipe.text_tokenizer)
    t2i.params = t2i.model_config.init(jax.random.key(0))[0]
    images = generate(1, seed=1)[0]
    for call in (lambda: t2i.caption(images), lambda: t2i.caption_logprob(images, ["a red circle"])):
        with pytest.raises(ValueError, match=r"without the image-to-text direction \(config.model.text_head=False\)"):
            call()


def test_sample_cli_prints_captions(run, tmp_path, capsys):
    workdir, pipe = run
    images = generate(2, seed=3)[0]
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for image, path in zip(images, paths):
        save_png(image, path)
    cli.sample_main(["--workdir", str(workdir), "--caption", *map(str, paths)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"{p}: {c}" for p, c in zip(paths, pipe.caption(images))]
    save_png(np.zeros((16, 16, 3), np.uint8), tmp_path / "small.png")
    save_png(np.zeros((32, 32), np.uint8), tmp_path / "grey.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    for name, match in (("small.png", "is a 16x16 RGB image; this run captions 32x32 RGB images"),
                        ("grey.png", "is a 32x32 L image"), ("bad.png", "not a readable image"),
                        ("none.png", "no such file")):
        with pytest.raises(SystemExit):
            cli.sample_main(["--workdir", str(workdir), "--caption", str(tmp_path / name)])
        assert match in capsys.readouterr().err
