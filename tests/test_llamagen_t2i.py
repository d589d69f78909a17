"""LlamaGen text-to-image import: parity with the PyTorch reference fixtures (read in place from
../shared/fixtures/llamagen_t2i), the null caption, padded prompts, GQA through the cache, workdirs, refusals."""

import json
import math
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

import ar_jax
from ar_jax import cli
from ar_jax.convert import llamagen
from ar_jax.models.transformer import Transformer, rope_table
from ar_jax.tokenizers import vq as vqlib
from tests.test_llamagen import _Evil

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / ".." / "shared" / "fixtures" / "llamagen_t2i"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"LlamaGen t2i fixtures not found at {FIXTURES}")
TINY_T2I = dict(model_type="t2i", dim=64, n_layer=2, n_head=4, vocab_size=64, block_size=16, cls_token_num=8,
                caption_dim=32)
C = 8  # caption rows
FORMS = ("tiny_t2i_gpt.safetensors", "tiny_t2i_gpt.pt")  # the same tensors; the .pt as LlamaGen saves it


@pytest.fixture(scope="module")
def io():
    return dict(np.load(FIXTURES / "tiny_t2i_gpt_io.npz"))


@pytest.fixture(scope="module", params=FORMS)
def gen(request):
    return llamagen.load_gpt(FIXTURES / request.param, **TINY_T2I)


def max_diff(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


# ------------------------------------------------------------------------------------------------ parity


def test_fixture_config_is_the_one_tested():
    assert json.loads((FIXTURES / "tiny_t2i_gpt_config.json").read_text())["load_gpt_kwargs"] == {
        **{k: v for k, v in TINY_T2I.items() if k != "model_type"}, "n_kv_head": None, "ffn_dim_multiplier": None,
        "multiple_of": 256, "rope_base": 10000, "norm_eps": 1e-05}


def test_left_pad_is_sample_t2is_reordering(io):
    embs, mask = llamagen.left_pad(io["raw_caption_embs"], io["raw_emb_mask"])
    np.testing.assert_array_equal(embs, io["caption_embs"])  # valid rows last, padding rows exactly 0
    np.testing.assert_array_equal(mask, io["emb_mask"])
    assert not embs[1, :5].any() and np.array_equal(embs[1, 5:], io["raw_caption_embs"][1, :3])
    with pytest.raises(ValueError, match=r"t5_mask row 1 .*right-padded"):
        llamagen.left_pad(io["raw_caption_embs"], io["emb_mask"])  # an already left-padded mask


def test_teacher_forcing_logits_with_a_padded_prompt(gen, io):
    full = np.asarray(gen.logits(io["input_tokens"], io["caption_embs"], io["emb_mask"]))
    assert full.shape == (2, C + 15, 64)
    assert max_diff(full, io["tf_logits_full"]) <= 1e-5
    assert not full[1, :5].any()  # the 5 padding rows of prompt 1 stay zero vectors: logits exactly 0
    image = gen.logits(io["input_tokens"], io["caption_embs"], io["emb_mask"], image_only=True)
    np.testing.assert_array_equal(image, full[:, C - 1:])
    assert max_diff(image, io["tf_logits"]) <= 1e-5
    logp = jax.nn.log_softmax(np.asarray(image))
    loss = -np.take_along_axis(np.asarray(logp), io["image_tokens"][..., None], -1).mean()
    np.testing.assert_allclose(loss, io["tf_loss"], rtol=1e-5)
    np.testing.assert_allclose(rope_table(gen.cfg), io["rope_freqs_cis"], atol=1e-6)  # rows 0..7 zero


def test_caption_projection_and_null_caption(gen, io):
    p = gen.params
    proj = lambda x: np.asarray(jax.nn.gelu(x @ p["cap_fc1"], approximate=True) @ p["cap_fc2"])
    assert max_diff(proj(io["caption_embs"]), io["caption_proj"]) <= 1e-5
    np.testing.assert_array_equal(p["uncond_embedding"], io["null_caption_embedding"])  # from the file
    assert max_diff(proj(io["null_caption_embedding"]), io["null_caption_proj"]) <= 1e-5


def test_greedy_tokens_and_cached_logits(gen, io):
    tokens, logits = gen.sample(io["caption_embs"], io["emb_mask"], cfg_scale=1.0, greedy=True, return_logits=True)
    np.testing.assert_array_equal(tokens, io["greedy_tokens"])
    assert max_diff(logits, io["greedy_logits"]) <= 1e-5
    # top_k=1 sampling is greedy whatever the seed: the sampling arguments reach the sampler.
    np.testing.assert_array_equal(gen.sample(io["caption_embs"], io["emb_mask"], cfg_scale=1.0, top_k=1, seed=3),
                                  io["greedy_tokens"])


def test_cfg_greedy_tokens(gen, io):
    tokens, logits = gen.sample(io["caption_embs"], io["emb_mask"], cfg_scale=4.0, greedy=True, return_logits=True)
    np.testing.assert_array_equal(tokens, io["cfg_greedy_tokens"])
    assert max_diff(logits, io["cfg_logits"]) <= 1e-5
    # Both halves through teacher forcing: the unconditional one is the null caption under each prompt's mask.
    prev = io["cfg_greedy_tokens"][:, :-1]
    cond = gen.logits(prev, io["caption_embs"], io["emb_mask"], image_only=True)
    uncond = gen.logits(prev, io["caption_embs"], io["emb_mask"], image_only=True, null=True)
    assert max_diff(cond, io["cfg_raw_logits"][:2]) <= 1e-5
    assert max_diff(uncond, io["cfg_raw_logits"][2:]) <= 1e-5
    all_ones = gen.logits(prev, io["caption_embs"], None, image_only=True, null=True)
    assert max_diff(all_ones, io["cfg_raw_logits"][2:]) > 0.1  # the mask of the null half matters


PARITY_SCRIPT = """
import json, sys
import numpy as np
from ar_jax.convert import llamagen
fix, kw = sys.argv[1], json.loads(sys.argv[2])
io = dict(np.load(fix + "/tiny_t2i_gpt_io.npz"))
gen = llamagen.load_gpt(fix + "/tiny_t2i_gpt.safetensors", **kw)
d = lambda a, b: float(np.abs(np.asarray(a, np.float64) - b).max())
full = gen.logits(io["input_tokens"], io["caption_embs"], io["emb_mask"])
t1, l1 = gen.sample(io["caption_embs"], io["emb_mask"], cfg_scale=1.0, greedy=True, return_logits=True)
t4, l4 = gen.sample(io["caption_embs"], io["emb_mask"], cfg_scale=4.0, greedy=True, return_logits=True)
print(json.dumps({"tf": d(full, io["tf_logits_full"]), "greedy": d(l1, io["greedy_logits"]),
                  "cfg": d(l4, io["cfg_logits"]), "greedy_tokens": bool((np.asarray(t1) == io["greedy_tokens"]).all()),
                  "cfg_tokens": bool((np.asarray(t4) == io["cfg_greedy_tokens"]).all())}))
"""


def test_parity_fully_optimised():
    """The tests run with JAX_DISABLE_MOST_OPTIMIZATIONS=1 (conftest.py); users run XLA's full optimisations."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_DISABLE_MOST_OPTIMIZATIONS"}
    proc = subprocess.run([sys.executable, "-c", PARITY_SCRIPT, str(FIXTURES), json.dumps(TINY_T2I)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got["greedy_tokens"] and got["cfg_tokens"], got
    assert max(got["tf"], got["greedy"], got["cfg"]) <= 1e-5, got


# ------------------------------------------------------------------ a float64 reference, GQA through the cache


def reference_logits(sd, tokens, caption_embs, emb_mask, *, n_head, n_kv_head, block_size, null=False, eps=1e-5,
                     base=10000.0):
    """LlamaGen's t2i teacher forcing in float64 numpy, written from the fixture README: `[B, C + T, V]`."""
    W = lambda k: sd[k].astype(np.float64)
    rms = lambda x, w: x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w
    C = caption_embs.shape[1]
    cap = np.broadcast_to(W("cls_embedding.uncond_embedding")[:C], caption_embs.shape) if null else caption_embs
    h = cap.astype(np.float64) @ W("cls_embedding.cap_proj.fc1.weight").T
    h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3)))  # GELU, tanh approximation
    x = np.concatenate([h @ W("cls_embedding.cap_proj.fc2.weight").T, W("tok_embeddings.weight")[tokens]], 1)
    B, S, D = x.shape
    hd, grid = D // n_head, math.isqrt(block_size)
    freqs = base ** (-np.arange(0, hd // 2, 2)[: hd // 4] / (hd // 2))
    n = np.arange(block_size)
    ang = np.concatenate([np.outer(n // grid, freqs), np.outer(n % grid, freqs)], 1)
    zero = np.zeros((C, hd // 2))  # caption rows: cos = sin = 0
    cos, sin = np.concatenate([zero, np.cos(ang)]), np.concatenate([zero, np.sin(ang)])
    mask = np.tril(np.ones((S, S)))[None].repeat(B, 0)
    mask[:, :, :C] *= emb_mask[:, None, :]  # padding key columns cut for every query
    mask = np.maximum(mask, np.eye(S)[None])  # ... but each row sees itself
    bias = np.where(mask > 0, 0.0, -np.inf)[:, None]  # [B, 1, S, S]

    def rope(t):  # [B, S, h, hd], interleaved pairs
        a, b = t[..., 0::2], t[..., 1::2]
        c, s = cos[None, :S, None], sin[None, :S, None]
        return np.stack([a * c - b * s, b * c + a * s], -1).reshape(t.shape)

    for i in range(max(int(k.split(".")[1]) for k in sd if k.startswith("layers.")) + 1):
        p = f"layers.{i}."
        h = rms(x, W(p + "attention_norm.weight"))
        q, k, v = np.split(h @ W(p + "attention.wqkv.weight").T, [n_head * hd, (n_head + n_kv_head) * hd], -1)
        q, k = rope(q.reshape(B, S, n_head, hd)), rope(k.reshape(B, S, n_kv_head, hd))
        k = np.repeat(k, n_head // n_kv_head, 2)  # torch repeat_interleave over heads
        v = np.repeat(v.reshape(B, S, n_kv_head, hd), n_head // n_kv_head, 2)
        att = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(hd) + bias
        att = np.exp(att - att.max(-1, keepdims=True))
        out = np.einsum("bhqk,bkhd->bqhd", att / att.sum(-1, keepdims=True), v).reshape(B, S, D)
        x = x + out @ W(p + "attention.wo.weight").T
        h = rms(x, W(p + "ffn_norm.weight"))
        a = h @ W(p + "feed_forward.w1.weight").T
        x = x + (a / (1 + np.exp(-a)) * (h @ W(p + "feed_forward.w3.weight").T)) @ W(p + "feed_forward.w2.weight").T
    return rms(x, W("norm.weight")) @ W("output.weight").T


def test_reference_matches_the_fixture(io):
    sd = load_file(FIXTURES / "tiny_t2i_gpt.safetensors")
    ref = reference_logits(sd, io["input_tokens"], io["caption_embs"], io["emb_mask"], n_head=4, n_kv_head=4,
                           block_size=16)
    assert max_diff(ref, io["tf_logits_full"]) <= 1e-5
    null = reference_logits(sd, io["cfg_greedy_tokens"][:, :-1], io["caption_embs"], io["emb_mask"], n_head=4,
                            n_kv_head=4, block_size=16, null=True)
    assert max_diff(null[:, C - 1:], io["cfg_raw_logits"][2:]) <= 1e-5


def random_t2i_state_dict(dim=32, n_layer=2, n_head=4, n_kv_head=2, vocab=24, caption_dim=12, cap_rows=6,
                          null_rows=120, hidden=96, seed=0):
    """A random LlamaGen-layout t2i state dict; the null caption has LlamaGen's 120 rows by default."""
    rng = np.random.default_rng(seed)
    r = lambda *s, std=0.1: (rng.normal(size=s) * std).astype(np.float32)
    hd = dim // n_head
    sd = {"tok_embeddings.weight": r(vocab, dim, std=1.0), "norm.weight": 1 + r(dim),
          "output.weight": r(vocab, dim, std=0.3), "cls_embedding.uncond_embedding": r(null_rows, caption_dim, std=1.0),
          "cls_embedding.cap_proj.fc1.weight": r(dim, caption_dim, std=0.4),
          "cls_embedding.cap_proj.fc2.weight": r(dim, dim, std=0.3)}
    for i in range(n_layer):
        p = f"layers.{i}."
        sd |= {p + "attention.wqkv.weight": r((n_head + 2 * n_kv_head) * hd, dim, std=0.3),
               p + "attention.wo.weight": r(dim, dim, std=0.2), p + "feed_forward.w1.weight": r(hidden, dim),
               p + "feed_forward.w3.weight": r(hidden, dim), p + "feed_forward.w2.weight": r(dim, hidden),
               p + "attention_norm.weight": 1 + r(dim), p + "ffn_norm.weight": 1 + r(dim)}
    return sd


def padded_captions(B=2, rows=6, width=12, valid=(6, 2), seed=1):
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(B, rows, width)).astype(np.float32)
    return llamagen.left_pad(raw, (np.arange(rows)[None] < np.asarray(valid)[:, None]).astype(np.int64))


@pytest.mark.parametrize("n_kv_head", [2, 1])
def test_grouped_query_t2i_cache_matches_teacher_forcing(n_kv_head):
    """LlamaGen's own t2i generate() fails for n_kv_head < n_head (its cache has n_head heads); ours must not."""
    sd = random_t2i_state_dict(n_kv_head=n_kv_head)
    args = dict(model_type="t2i", dim=32, n_layer=2, n_head=4, n_kv_head=n_kv_head, vocab_size=24, block_size=16,
                cls_token_num=6, caption_dim=12, multiple_of=32)
    gen = llamagen.load_gpt(sd, **args)
    assert gen.params["layers_0"]["attention"]["wk"].shape == (32, n_kv_head, 8)
    embs, mask = padded_captions()
    for scale in (1.0, 3.0):
        tokens, cached = gen.sample(embs, mask, cfg_scale=scale, greedy=True, return_logits=True)
        prev = np.asarray(tokens[:, :-1])
        tf = np.asarray(gen.logits(prev, embs, mask, image_only=True))
        if scale > 1:
            u = np.asarray(gen.logits(prev, embs, mask, image_only=True, null=True))
            tf = u + (tf - u) * scale
        assert max_diff(cached, tf) <= 1e-5  # cache path == teacher forcing, padded prompt included
        np.testing.assert_array_equal(tokens, tf.argmax(-1))
        assert len(np.unique(tokens)) > 2 and tf.std() > 0.1  # not a degenerate model
    ref = reference_logits(sd, prev, embs, mask, n_head=4, n_kv_head=n_kv_head, block_size=16)
    assert max_diff(ref, gen.logits(prev, embs, mask)) <= 1e-5  # heads grouped as LlamaGen's repeat_interleave
    with pytest.raises(ValueError, match=f"n_kv_head={n_kv_head}"):
        llamagen.load_gpt(sd, **{**args, "n_kv_head": None})


def test_120_row_null_caption_uses_its_first_cls_token_num_rows(io):
    """LlamaGen builds the null caption with 120 rows whatever cls_token_num is; its forward keeps the first
    cls_token_num rows of a projected caption, so those are the null caption of a shorter model."""
    sd = load_file(FIXTURES / "tiny_t2i_gpt.safetensors")
    extra = np.random.default_rng(0).normal(size=(112, 32)).astype(np.float32)
    sd120 = {**sd, "cls_embedding.uncond_embedding": np.concatenate([sd["cls_embedding.uncond_embedding"], extra])}
    gen = llamagen.load_gpt(sd120, **TINY_T2I)
    np.testing.assert_array_equal(gen.params["uncond_embedding"], io["null_caption_embedding"])
    np.testing.assert_array_equal(gen.sample(io["caption_embs"], io["emb_mask"], cfg_scale=4.0, greedy=True),
                                  io["cfg_greedy_tokens"])
    short = {**sd, "cls_embedding.uncond_embedding": sd["cls_embedding.uncond_embedding"][:4]}
    with pytest.raises(ValueError, match=r"'cls_embedding.uncond_embedding' has shape \(4, 32\) in the checkpoint "
                                         r"but the model args need \(8, 32\).*try load_gpt\(path, cls_token_num=4\)"):
        llamagen.load_gpt(short, **TINY_T2I)


# -------------------------------------------------------------------------------------------------- refusals


def test_mismatched_t2i_checkpoints_are_refused():
    sd = load_file(FIXTURES / "tiny_t2i_gpt.safetensors")
    missing = {k: v for k, v in sd.items() if k != "cls_embedding.cap_proj.fc2.weight"}
    with pytest.raises(ValueError, match=r"missing key 'cls_embedding.cap_proj.fc2.weight' \(expected shape \(64, "):
        llamagen.load_gpt(missing, **TINY_T2I)  # strict, unlike sample_t2i.py's load_state_dict(strict=False)
    with pytest.raises(ValueError, match=r"unexpected key 'cls_embedding.cap_proj.fc1.bias'"):
        llamagen.load_gpt({**sd, "cls_embedding.cap_proj.fc1.bias": np.zeros(64, np.float32)}, **TINY_T2I)
    with pytest.raises(ValueError, match=r"\(64, 32\) in the checkpoint but the model args need \(64, 2048\).*"
                                         r"try load_gpt\(path, caption_dim=32\)"):
        llamagen.load_gpt(sd, **{**TINY_T2I, "caption_dim": 2048})
    c2i_args = {k: v for k, v in TINY_T2I.items() if k not in ("model_type", "cls_token_num", "caption_dim")}
    with pytest.raises(ValueError, match=r"missing key 'cls_embedding.embedding_table.weight'.*try load_gpt\(path, "
                                         r"model_type='t2i', caption_dim=32, cls_token_num=8\)"):
        llamagen.load_gpt(sd, **c2i_args)  # a t2i file loaded as c2i (the default)
    c2i = load_file(ROOT / ".." / "shared" / "fixtures" / "llamagen" / "tiny_gpt.safetensors")
    with pytest.raises(ValueError, match=r"try load_gpt\(path, model_type='c2i', num_classes=10\)"):
        llamagen.load_gpt(c2i, **TINY_T2I)
    with pytest.raises(ValueError, match=r"model_type='x2i' is not one of"):
        llamagen.load_gpt(sd, **{**TINY_T2I, "model_type": "x2i"})
    assert llamagen.gpt_args("GPT-XL", model_type="t2i")["cls_token_num"] == 120  # sample_t2i.py's default
    xl = llamagen.gpt_config(llamagen.gpt_args("GPT-XL", model_type="t2i"))
    assert (xl.dim, xl.num_layers, xl.cls_token_num, xl.caption_dim, xl.condition) == (1280, 36, 120, 2048, "caption")


def test_malicious_t2i_pt_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"model": {"cls_embedding.uncond_embedding": _Evil(f"touch {marker}")}}, protocol=2)
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as zf:
        zf.writestr("evil/data.pkl", payload)
    with pytest.raises(ValueError, match=r"system.*not a tensor storage or a plain container"):
        llamagen.load_gpt(tmp_path / "evil.pt", **TINY_T2I)
    assert not marker.exists()


def test_bad_captions_are_refused(io):
    gen = llamagen.load_gpt(FIXTURES / FORMS[0], **TINY_T2I)
    with pytest.raises(ValueError, match=r"row \(1, 0\) is padding .*left_pad"):  # raw T5 output, not reordered
        gen.sample(io["raw_caption_embs"], io["emb_mask"])
    with pytest.raises(ValueError, match=r"caption_embs must be \[B, cls_token_num=8, caption_dim=32\]"):
        gen.logits(io["input_tokens"], io["caption_embs"][:, :6], io["emb_mask"][:, :6])
    with pytest.raises(ValueError, match=r"emb_mask must be \[B=2, 8\]"):
        gen.sample(io["caption_embs"], io["emb_mask"][0])
    with pytest.raises(ValueError, match=r"tokens must be \[B=2, T\]"):
        gen.logits(io["input_tokens"][:1], io["caption_embs"], io["emb_mask"])


# -------------------------------------------------------------------------------- workdir and sample.py


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The fixture t2i GPT with a random VQ of its vocabulary (64 codes, 4x4 grid of 8x8 images), saved."""
    gen = llamagen.load_gpt(FIXTURES / FORMS[0], **TINY_T2I)
    args = llamagen._resolve("VQ", llamagen.VQ_DEFAULTS, llamagen.VQ_PRESETS, None,
                             dict(ch=32, ch_mult=[1, 2], z_channels=32, codebook_size=64, codebook_embed_dim=8))
    cfg = llamagen.vq_config(args)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: np.float32(0.1) * rng.standard_normal(s.shape, np.float32), vqlib.param_shapes(cfg))
    vq = llamagen.LlamaGenVQ(cfg, params, args)
    workdir = tmp_path_factory.mktemp("converted") / "w"
    assert llamagen.save_workdirs(gen, vq, workdir) == workdir
    return gen, vq, workdir


def test_workdir_gives_the_converted_models_logits_and_tokens(saved, io):
    gen, _, workdir = saved
    pipe = ar_jax.load(workdir)
    cfg = pipe.model_config
    assert (cfg.condition, cfg.cls_token_num, cfg.caption_dim) == ("caption", 8, 32)
    cond = {"features": io["caption_embs"], "mask": io["emb_mask"]}
    checked = jax.tree.map(np.asarray, pipe.condition(cond=cond))
    logits, _ = jax.jit(Transformer(cfg).apply)({"params": pipe.params}, io["input_tokens"], checked)
    np.testing.assert_array_equal(logits, gen.logits(io["input_tokens"], io["caption_embs"], io["emb_mask"]))
    assert max_diff(logits, io["tf_logits_full"]) <= 1e-5
    np.testing.assert_array_equal(pipe.sample_tokens(cond=cond, greedy=True, cfg_scale=4.0), io["cfg_greedy_tokens"])
    np.testing.assert_array_equal(pipe.sample_tokens(cond=cond, greedy=True, cfg_scale=1.0), io["greedy_tokens"])
    np.testing.assert_array_equal(pipe.sample_tokens(cond=cond, seed=5),
                                  gen.sample(io["caption_embs"], io["emb_mask"], seed=5))  # LlamaGen's t2i defaults
    s = pipe.config.sampling
    assert (s.cfg_scale, s.top_k, s.temperature, s.top_p) == (7.5, 64, 1.0, 1.0)  # top-k 1000 clamped to the vocab
    with pytest.raises(ValueError, match="caption features"):
        pipe.sample_tokens([1, 2])
    with pytest.raises(ValueError, match="not several"):
        pipe.sample_tokens([1, 2], cond=cond)


def test_sample_cli_from_t5_features(saved, io, tmp_path):
    _, vq, workdir = saved
    feats = tmp_path / "feats.npz"
    np.savez(feats, t5_embs=io["raw_caption_embs"], t5_mask=io["raw_emb_mask"])  # as the T5 encoder gives them
    out = tmp_path / "s.npz"
    cli.sample_main(["--workdir", str(workdir), "--caption_embeddings", str(feats), "--per_class", "1", "--out",
                     str(out), "--config.sampling.greedy=True", "--config.sampling.cfg_scale=4.0"])
    decoded = np.asarray(vq.decode(io["cfg_greedy_tokens"].reshape(2, 4, 4)))
    expected = np.clip(np.round((decoded + 1) * 127.5), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(np.load(out)["images"], expected)  # decoded by the saved VQ
    np.testing.assert_array_equal(np.load(out)["caption_index"], [0, 1])
    # Straight from the checkpoint: top-k 1 is greedy.
    tokens = tmp_path / "t.npz"
    np.savez(feats, caption_embs=io["caption_embs"], emb_mask=io["emb_mask"])  # LlamaGen-ready form
    cli.sample_main(["--llamagen_gpt", str(FIXTURES / FORMS[1]), "--llamagen_args", json.dumps(TINY_T2I),
                     "--caption_embeddings", str(feats), "--cfg_scale", "4.0", "--top_k", "1", "--out", str(tokens)])
    np.testing.assert_array_equal(np.load(tokens)["tokens"], io["cfg_greedy_tokens"])
    bad = tmp_path / "bad.npz"
    np.savez(bad, caption_embs=io["raw_caption_embs"], emb_mask=io["emb_mask"])
    with pytest.raises(SystemExit):
        cli.sample_main(["--workdir", str(workdir), "--caption_embeddings", str(bad), "--out", str(out)])
    with pytest.raises(SystemExit):
        cli.sample_main(["--workdir", str(workdir), "--caption_embeddings", str(feats), "--labels", "1",
                         "--out", str(out)])
