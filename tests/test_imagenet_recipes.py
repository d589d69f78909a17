"""LlamaGen's ImageNet recipes: the full configs build LlamaGen's models (without allocating), the smoke variants
train a VQ then a GPT over its codes and resume, and images are cropped as LlamaGen's `center_crop_arr`."""

import json
import types

import jax
import numpy as np
import pytest
from PIL import Image

import ar_jax
from ar_jax import builders
from ar_jax.config import apply_overrides, load_config_file
from ar_jax.convert import llamagen
from ar_jax.data.sources import fit_image, get_dataset
from ar_jax.data.tfds_source import from_builder
from ar_jax.models.transformer import param_shapes
from ar_jax.tokenizers import vq
from ar_jax.tokenizers.vq_tokens import vq_config
from ar_jax.training import train_and_evaluate
from tests.helpers import FakeBuilder, tfds_config

count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_full_recipes_build_llamagen_models_without_allocating():
    vq_cfg = vq_config(load_config_file("configs/imagenet_vq16.py"))
    assert vq_cfg == llamagen.vq_config(llamagen._resolve("VQ", llamagen.VQ_DEFAULTS, llamagen.VQ_PRESETS, "VQ-16",
                                                           {})).replace(dtype="bfloat16", decoder_ch_mult=None)
    assert 71.5e6 < count(vq.param_shapes(vq_cfg)) < 72.5e6  # LlamaGen: VQ-16 has 72 M parameters
    config = load_config_file("configs/imagenet_gpt_b.py")
    codes = types.SimpleNamespace(vocab_size=config.tokenizer.codebook_size, seq_len=256)  # no trained tokenizer
    gpt = builders.make_model_config(config, codes)
    ref = llamagen.gpt_config(llamagen._resolve("GPT", llamagen.GPT_DEFAULTS, llamagen.GPT_PRESETS, "GPT-B", {}))
    assert jax.tree.map(lambda s: s.shape, param_shapes(gpt)) == jax.tree.map(lambda s: s.shape, param_shapes(ref))
    assert 110e6 < count(param_shapes(gpt)) < 112e6  # LlamaGen: GPT-B has 111 M parameters
    assert (gpt.hidden_dim, gpt.rope, gpt.cls_token_num, gpt.token_dropout) == (2048, "2d", 1, 0.1)
    o = config.optimizer
    assert (o.learning_rate, o.b1, o.b2, o.weight_decay, o.grad_clip, config.batch_size) == (1e-4, 0.9, 0.95, 0.05,
                                                                                             1.0, 256)
    assert (config.label_dropout, config.sampling.cfg_scale, config.sampling.top_k) == (0.1, 4.0, 2000)
    assert config.num_train_steps == 300 * (1_281_167 // 256)
    assert config.data.tfds_name == "imagenet2012" and tuple(config.data.image_shape) == (256, 256, 3)


def _metrics_steps(workdir, key="loss"):
    lines = [json.loads(s) for s in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [m["step"] for m in lines if key in m]


def test_smoke_recipes_train_vq_then_gpt_over_its_codes(tmp_path):
    """Both recipes run end to end (resume is covered for both trainers by test_vq_training / test_training)."""
    vq_dir, gpt_dir = tmp_path / "vq", tmp_path / "gpt"
    state = train_and_evaluate(load_config_file("configs/imagenet_vq16.py:smoke"), vq_dir)
    assert int(state["step"]) == 4 and _metrics_steps(vq_dir) == [2, 4]

    gpt_config = apply_overrides(load_config_file("configs/imagenet_gpt_b.py:smoke"),
                                 [f"--config.tokenizer.workdir={vq_dir}"])
    state = train_and_evaluate(gpt_config, gpt_dir)
    assert int(state.step) == 4 and _metrics_steps(gpt_dir) == [2, 4]
    grid = np.asarray(Image.open(gpt_dir / "samples.png"))  # sampled (CFG 4.0, top-k) and decoded by the VQ
    assert grid.shape[-1] == 3 and grid.std() > 0
    assert ar_jax.load(gpt_dir).tokenizer.pipe.workdir == str(vq_dir.absolute())


def center_crop_arr(pil_image, image_size):
    """ADM's / LlamaGen's preprocessing (dataset/augmentation.py), written out as the reference."""
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    y, x = (arr.shape[0] - image_size) // 2, (arr.shape[1] - image_size) // 2
    return arr[y: y + image_size, x: x + image_size]


def test_tfds_images_of_varying_sizes_are_cropped_as_llamagen_center_crop_arr():
    rng = np.random.default_rng(0)
    sizes = [(40, 40), (97, 130), (300, 200), (515, 700), (33, 64), (129, 128)]
    train = [{"image": rng.integers(0, 256, (*hw, 3), dtype=np.uint8), "label": i % 3} for i, hw in enumerate(sizes)]
    data = from_builder(FakeBuilder({"train": train, "test": train[:2]}), tfds_config(image_shape=(32, 32, 3)))
    for ours, example in zip(data.train_images, train):
        np.testing.assert_array_equal(ours, center_crop_arr(Image.fromarray(example["image"]), 32))
    grey = np.asarray(Image.fromarray(train[3]["image"]).convert("L"))  # converted to the configured channels first
    assert fit_image(Image.fromarray(grey), 32, 32, "RGB").shape == (32, 32, 3)


def test_imagenet_data_section_reads_through_tfds():
    tfds = pytest.importorskip("tensorflow_datasets")
    data_config = load_config_file("configs/imagenet_vq16.py").data
    data_config.unlock()
    data_config.image_shape = (16, 16, 3)  # the mock images are small; the reading path is the recipe's
    with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
        data = get_dataset(data_config)
    assert data.train_images.shape == (3, 16, 16, 3) and data.num_classes == 1000
    assert data.test_images.dtype == np.uint8 and data.test_labels.max() < 1000
