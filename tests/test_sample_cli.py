"""sample.py on LlamaGen checkpoints (the fixtures): greedy tokens as LlamaGen's, a grid through the VQ decoder."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parent.parent
FIX = ROOT.parent / "shared/fixtures/llamagen"
GPT_ARGS = json.dumps({"dim": 64, "n_layer": 2, "n_head": 4, "vocab_size": 64, "block_size": 16, "num_classes": 10})

pytestmark = pytest.mark.skipif(not FIX.is_dir(), reason="LlamaGen fixtures (../shared/fixtures/llamagen) absent")


def sample(*args):
    return subprocess.run([sys.executable, str(ROOT / "sample.py"), "--llamagen_gpt", str(FIX / "tiny_gpt.safetensors"),
                           "--llamagen_args", GPT_ARGS, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_llamagen_greedy_tokens_through_the_script(tmp_path):
    proc = sample("--labels", "3,7", "--cfg_scale", "4.0", "--top_k", "1", "--out", str(tmp_path / "t.npz"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    io = np.load(FIX / "tiny_gpt_io.npz")
    np.testing.assert_array_equal(np.load(tmp_path / "t.npz")["tokens"], io["cfg4_greedy_tokens"])


def test_llamagen_grid_through_the_vq_decoder(tmp_path):
    vq_args = json.dumps({"codebook_size": 64, "codebook_embed_dim": 8, "ch": 32, "ch_mult": [1, 2],
                          "z_channels": 32})
    proc = sample("--llamagen_vq", str(FIX / "tiny_vq.safetensors"), "--llamagen_vq_args", vq_args,
                  "--out", str(tmp_path / "g.png"))
    assert proc.returncode != 0 and "quantize.embedding.weight" in proc.stderr  # codebook 32 != 64: refused
    vq_args = json.loads(vq_args) | {"codebook_size": 32}
    proc = sample("--llamagen_vq", str(FIX / "tiny_vq.safetensors"), "--llamagen_vq_args", json.dumps(vq_args),
                  "--out", str(tmp_path / "g.png"))
    assert proc.returncode != 0 and "vocab_size=64 differs from the VQ's codebook_size=32" in proc.stderr


def test_llamagen_grid_png(tmp_path):
    from PIL import Image
    from safetensors.numpy import load_file, save_file

    sd = load_file(FIX / "tiny_gpt.safetensors")  # cut the vocabulary to the tiny VQ's 32 codes
    sd["tok_embeddings.weight"], sd["output.weight"] = sd["tok_embeddings.weight"][:32], sd["output.weight"][:32]
    save_file(sd, tmp_path / "gpt32.safetensors")
    vq_args = json.dumps({"codebook_size": 32, "codebook_embed_dim": 8, "ch": 32, "ch_mult": [1, 2], "z_channels": 32})
    gpt = str(tmp_path / "gpt32.safetensors")
    proc = subprocess.run([sys.executable, str(ROOT / "sample.py"), "--llamagen_gpt", gpt,
                           "--llamagen_args", GPT_ARGS.replace('"vocab_size": 64', '"vocab_size": 32'),
                           "--llamagen_vq", str(FIX / "tiny_vq.safetensors"), "--llamagen_vq_args", vq_args,
                           "--labels", "1,2,3", "--per_class", "2", "--out", str(tmp_path / "g.png")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    assert grid.ndim == 3 and grid.shape[2] == 3 and grid.shape[0] > 3 * 8  # 3 rows of 8x8 RGB images, scaled up
