"""LlamaGen import: parity with the PyTorch reference fixtures, GQA, `.pt` reading, refusals."""

import collections
import math
import os
import pickle
import sys
import types
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from safetensors.numpy import load_file

from ar_jax.convert import llamagen
from ar_jax.convert.torch_pickle import load_torch_zip
from ar_jax.models.transformer import rope_table

FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "llamagen"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"LlamaGen fixtures not found at {FIXTURES}")
TINY_GPT = dict(dim=64, n_layer=2, n_head=4, vocab_size=64, block_size=16, num_classes=10)
TINY_VQ = dict(ch=32, ch_mult=[1, 2], z_channels=32, codebook_size=32, codebook_embed_dim=8)
nchw = lambda x: np.asarray(x).transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def gpt_io():
    return dict(np.load(FIXTURES / "tiny_gpt_io.npz"))


@pytest.fixture(scope="module")
def gen():
    return llamagen.load_gpt(FIXTURES / "tiny_gpt.safetensors", **TINY_GPT)


@pytest.fixture(scope="module")
def vq_io():
    return dict(np.load(FIXTURES / "tiny_vq_io.npz"))


# ----------------------------------------------------------------------------------- GPT parity


def test_teacher_forcing_logits(gen, gpt_io):
    logits = np.asarray(gen.logits(gpt_io["input_tokens"], gpt_io["class_labels"]))
    assert logits.shape == (2, 16, 64)
    assert np.abs(logits - gpt_io["tf_logits"]).max() <= 1e-5
    logp = logits[:, :15] - np.log(np.exp(logits[:, :15]).sum(-1, keepdims=True))
    ce = -np.take_along_axis(logp, gpt_io["input_tokens"][..., None], -1).mean()
    np.testing.assert_allclose(ce, gpt_io["tf_ce_loss_first15"], rtol=1e-5)
    np.testing.assert_allclose(rope_table(gen.cfg), gpt_io["rope_freqs_cis"], atol=1e-6)


def test_kv_cache_logits_and_greedy_tokens(gen, gpt_io):
    tokens, logits = gen.sample(gpt_io["class_labels"], greedy=True, return_logits=True)
    assert np.abs(np.asarray(logits) - gpt_io["kv_logits"]).max() <= 1e-5
    np.testing.assert_array_equal(tokens, gpt_io["greedy_tokens"])
    # top_k=1 sampling is greedy whatever the seed: the sampling arguments reach the sampler.
    np.testing.assert_array_equal(gen.sample(gpt_io["class_labels"], top_k=1, seed=3), gpt_io["greedy_tokens"])
    # LlamaGen: cfg_scale <= 1 means no guidance; top_k beyond the vocabulary is clamped to it.
    np.testing.assert_array_equal(gen.sample(gpt_io["class_labels"], cfg_scale=0.5, top_k=1000, greedy=True),
                                  gpt_io["greedy_tokens"])


def test_cfg4_greedy_tokens(gen, gpt_io):
    tokens, logits = gen.sample(gpt_io["class_labels"], cfg_scale=4.0, greedy=True, return_logits=True)
    assert np.abs(np.asarray(logits) - gpt_io["cfg4_logits"]).max() <= 1e-5
    np.testing.assert_array_equal(tokens, gpt_io["cfg4_greedy_tokens"])
    # The unconditional half: the null class (row 10) through teacher forcing.
    uncond = gen.logits(gpt_io["cfg4_greedy_tokens"][:, :15], np.full(2, 10))
    assert np.abs(np.asarray(uncond) - gpt_io["cfg4_raw_logits"][2:]).max() <= 1e-5


# ------------------------------------------------------------------------------------ VQ parity


def test_vq_parity(vq_io):
    vq = llamagen.load_vq(FIXTURES / "tiny_vq.safetensors", **TINY_VQ)
    codes, quant = vq.encode(vq_io["image"].transpose(0, 2, 3, 1), return_quant=True)
    np.testing.assert_array_equal(codes, vq_io["codes"])
    assert np.abs(nchw(quant) - vq_io["quant"]).max() <= 1e-4
    recon = vq.decode_quant(quant)
    assert np.abs(nchw(recon) - vq_io["recon"]).max() <= 1e-4
    from_codes = vq.decode(codes)
    assert np.abs(nchw(from_codes) - vq_io["recon_from_codes"]).max() <= 1e-4
    np.testing.assert_allclose(from_codes, recon, atol=5e-5)  # two paths; Winograd convolutions round at ~2e-5
    np.testing.assert_allclose(vq.decode(vq_io["codes"]), from_codes, atol=1e-6)
    with pytest.raises(ValueError, match="NHWC"):
        vq.encode(vq_io["image"])


# ---------------------------------------------------------------------- GQA through the cache


def reference_logits(sd, tokens, labels, *, n_head, n_kv_head, block_size, eps=1e-5, base=10000.0):
    """LlamaGen's c2i forward in float64 numpy, written from its description: `[B, 1 + T, V]`."""
    W = lambda k: sd[k].astype(np.float64)
    rms = lambda x, w: x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w
    x = np.concatenate([W("cls_embedding.embedding_table.weight")[labels][:, None],
                        W("tok_embeddings.weight")[tokens]], 1)
    B, S, D = x.shape
    hd, grid = D // n_head, math.isqrt(block_size)
    freqs = base ** (-np.arange(0, hd // 2, 2)[: hd // 4] / (hd // 2))
    n = np.arange(block_size)
    ang = np.concatenate([np.outer(n // grid, freqs), np.outer(n % grid, freqs)], 1)
    zero = np.zeros((1, hd // 2))  # the class token's row: cos = sin = 0
    cos, sin = np.concatenate([zero, np.cos(ang)]), np.concatenate([zero, np.sin(ang)])

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
        att = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(hd) + np.triu(np.full((S, S), -np.inf), 1)
        att = np.exp(att - att.max(-1, keepdims=True))
        out = np.einsum("bhqk,bkhd->bqhd", att / att.sum(-1, keepdims=True), v).reshape(B, S, D)
        x = x + out @ W(p + "attention.wo.weight").T
        h = rms(x, W(p + "ffn_norm.weight"))
        a = h @ W(p + "feed_forward.w1.weight").T
        x = x + (a / (1 + np.exp(-a)) * (h @ W(p + "feed_forward.w3.weight").T)) @ W(p + "feed_forward.w2.weight").T
    return rms(x, W("norm.weight")) @ W("output.weight").T


def random_gpt_state_dict(dim=32, n_layer=2, n_head=4, n_kv_head=2, vocab=24, classes=5, hidden=96, seed=0):
    """A random LlamaGen-layout c2i state dict (with the null-class row)."""
    rng = np.random.default_rng(seed)
    r = lambda *s, std=0.1: (rng.normal(size=s) * std).astype(np.float32)
    hd = dim // n_head
    sd = {"tok_embeddings.weight": r(vocab, dim, std=1.0), "cls_embedding.embedding_table.weight": r(classes + 1, dim),
          "norm.weight": 1 + r(dim), "output.weight": r(vocab, dim, std=0.3)}
    for i in range(n_layer):
        p = f"layers.{i}."
        sd |= {p + "attention.wqkv.weight": r((n_head + 2 * n_kv_head) * hd, dim, std=0.3),
               p + "attention.wo.weight": r(dim, dim, std=0.2), p + "feed_forward.w1.weight": r(hidden, dim),
               p + "feed_forward.w3.weight": r(hidden, dim), p + "feed_forward.w2.weight": r(dim, hidden),
               p + "attention_norm.weight": 1 + r(dim), p + "ffn_norm.weight": 1 + r(dim)}
    return sd


def test_reference_matches_the_fixture(gpt_io):
    ref = reference_logits(load_file(FIXTURES / "tiny_gpt.safetensors"), gpt_io["input_tokens"],
                           gpt_io["class_labels"], n_head=4, n_kv_head=4, block_size=16)
    assert np.abs(ref - gpt_io["tf_logits"]).max() <= 1e-5


# The second case also moves every other computation-changing ModelArgs field off its default.
@pytest.mark.parametrize("n_kv_head, extra, hidden", [
    (2, dict(multiple_of=32), 96),  # find_multiple(int(2 * 4 * 32 / 3) = 85, 32)
    (1, dict(multiple_of=64, ffn_dim_multiplier=1.6, rope_base=500.0, norm_eps=1e-3), 192)])  # int(1.6 * 85) = 136
def test_grouped_query_generation(n_kv_head, extra, hidden):
    sd = random_gpt_state_dict(n_kv_head=n_kv_head, hidden=hidden)
    args = dict(dim=32, n_layer=2, n_head=4, n_kv_head=n_kv_head, vocab_size=24, block_size=16, num_classes=5, **extra)
    gen = llamagen.load_gpt(sd, **args)
    assert gen.params["layers_0"]["attention"]["wk"].shape == (32, n_kv_head, 8)
    labels = np.array([1, 4])
    tokens, cached = gen.sample(labels, greedy=True, return_logits=True)
    tf = np.asarray(gen.logits(tokens[:, :-1], labels))
    assert np.abs(np.asarray(cached) - tf).max() <= 1e-5  # cache path == teacher forcing
    np.testing.assert_array_equal(tokens, tf.argmax(-1))
    assert len(np.unique(tokens)) > 2 and tf.std() > 0.1  # not a degenerate model
    ref = reference_logits(sd, np.asarray(tokens[:, :-1]), labels, n_head=4, n_kv_head=n_kv_head, block_size=16,
                           eps=extra.get("norm_eps", 1e-5), base=extra.get("rope_base", 10000.0))
    assert np.abs(ref - tf).max() <= 1e-5  # heads grouped as LlamaGen's repeat_interleave
    with pytest.raises(ValueError, match=f"n_kv_head={n_kv_head}"):
        llamagen.load_gpt(sd, **{**args, "n_kv_head": None})


# ---------------------------------------------------------------------- .pt files without torch


class _View:
    """A tensor to save as `storage[offset:]` with `size` and `stride` (elements), sharing `storage`."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def save_torch_zip(path, obj, archive="archive"):
    """Write `obj` the way `torch.save` does (zip, protocol-2 pickle, storages by persistent id), without torch.

    Arrays and `_View`s become `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False,
    OrderedDict())`; storages are `('storage', torch.<X>Storage, key, 'cpu', numel)` with raw
    little-endian bytes in `<archive>/data/<key>`. Stand-in `torch` modules exist only while pickling.
    """
    fake_torch, fake_utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    names = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float16): "HalfStorage",
             np.dtype(np.int64): "LongStorage"}
    for n in names.values():
        setattr(fake_torch, n, type(n, (), {"__module__": "torch"}))

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while saving")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    fake_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    storages = {}

    class Storage:
        def __init__(self, array):
            self.array, self.key = array, str(len(storages))
            storages[id(array)] = self

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                stype = getattr(fake_torch, names[obj.array.dtype])
                return ("storage", stype, obj.key, "cpu", obj.array.size)
            return None

        def reducer_override(self, obj):
            if isinstance(obj, np.ndarray):
                obj = _View(np.ascontiguousarray(obj).reshape(-1), 0, obj.shape,
                            tuple(int(np.prod(obj.shape[i + 1:])) for i in range(obj.ndim)))
            if isinstance(obj, _View):
                st = storages.get(id(obj.storage)) or Storage(obj.storage)
                args = (st, obj.offset, tuple(obj.size), tuple(obj.stride), False, collections.OrderedDict())
                return _rebuild_tensor_v2, args
            return NotImplemented

    import io

    buf = io.BytesIO()
    with mock.patch.dict(sys.modules, {"torch": fake_torch, "torch._utils": fake_utils}):
        Pickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{archive}/data.pkl", buf.getvalue())
        zf.writestr(f"{archive}/byteorder", "little")
        for st in storages.values():
            zf.writestr(f"{archive}/data/{st.key}", st.array.astype(st.array.dtype.newbyteorder("<")).tobytes())
        zf.writestr(f"{archive}/version", "3\n")


def test_pt_zip_of_tensors_loads(tmp_path, gen, gpt_io):
    sd = load_file(FIXTURES / "tiny_gpt.safetensors")
    wrapped = {"model": collections.OrderedDict(sd), "steps": 7, "args": {"gpt_model": "GPT-tiny"}}
    save_torch_zip(tmp_path / "wrapped.pt", wrapped, archive="wrapped")
    save_torch_zip(tmp_path / "bare.pt", collections.OrderedDict((f"module.{k}", v) for k, v in sd.items()))
    for name in ("wrapped.pt", "bare.pt"):
        loaded = llamagen.read_state_dict(tmp_path / name)
        assert loaded.keys() == sd.keys() and all(np.array_equal(loaded[k], sd[k]) for k in sd)
    from_pt = llamagen.load_gpt(tmp_path / "wrapped.pt", **TINY_GPT)
    np.testing.assert_array_equal(from_pt.logits(gpt_io["input_tokens"], gpt_io["class_labels"]),
                                  gen.logits(gpt_io["input_tokens"], gpt_io["class_labels"]))


def test_pt_views_dtypes_and_shared_storage(tmp_path):
    base = np.arange(24, dtype=np.float32)
    obj = {"t": _View(base, 2, (3, 4), (1, 3)),  # a transposed view at an offset, sharing `base`
           "full": _View(base, 0, (24,), (1,)), "half": np.arange(6, dtype=np.float16).reshape(2, 3),
           "steps": np.array(5, np.int64), "nested": [(1, 2.5, "x", None, b"raw")]}
    save_torch_zip(tmp_path / "v.pt", obj)
    out = load_torch_zip(str(tmp_path / "v.pt"))
    np.testing.assert_array_equal(out["t"], base[2:14].reshape(4, 3).T)
    np.testing.assert_array_equal(out["full"], base)
    assert out["half"].dtype == np.float16 and out["steps"].shape == () and int(out["steps"]) == 5
    assert out["nested"] == [(1, 2.5, "x", None, b"raw")]
    with zipfile.ZipFile(tmp_path / "v.pt") as zf:
        assert len([n for n in zf.namelist() if "/data/" in n]) == 3  # t and full share one storage


class _Evil:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_malicious_pt_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"model": {"w": _Evil(f"touch {marker}")}}, protocol=2)
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as zf:
        zf.writestr("evil/data.pkl", payload)
    with pytest.raises(ValueError, match=r"system.*not a tensor storage or a plain container"):
        llamagen.load_gpt(tmp_path / "evil.pt", **TINY_GPT)
    (tmp_path / "raw.pt").write_bytes(payload)  # a bare pickle (no zip) is never unpickled at all
    with pytest.raises(ValueError, match="not a torch zip archive"):
        llamagen.read_state_dict(tmp_path / "raw.pt")
    assert not marker.exists()
    # Any other class is refused the same way: only tensors and plain containers come out.
    with zipfile.ZipFile(tmp_path / "obj.pt", "w") as zf:
        zf.writestr("obj/data.pkl", pickle.dumps({"model": _View(None, 0, (), ())}, protocol=2))
    with pytest.raises(ValueError, match=r"test_llamagen\._View"):
        llamagen.read_state_dict(tmp_path / "obj.pt")


# -------------------------------------------------------------------------------------- refusals


def test_mismatched_checkpoints_are_refused():
    sd = load_file(FIXTURES / "tiny_gpt.safetensors")
    with pytest.raises(ValueError, match=r"'tok_embeddings.weight' has shape \(64, 64\) in the checkpoint but the "
                                         r"model args need \(16384, 4096\).*dim=64, n_layer=2, vocab_size=64"):
        llamagen.load_gpt(sd)
    # A GPT-B-shaped checkpoint (zero-stride arrays: shapes only) loaded with the default (7B) args.
    b_args = llamagen._resolve("GPT", llamagen.GPT_DEFAULTS, llamagen.GPT_PRESETS, "GPT-B", dict(num_classes=100))
    gpt_b = {k: np.broadcast_to(np.float32(0), s)
             for k, s in llamagen._gpt_expected(llamagen.gpt_config(b_args)).items()}
    with pytest.raises(ValueError, match=r"try load_gpt\(path, preset='GPT-B', num_classes=100\)"):
        llamagen.load_gpt(gpt_b)
    missing = {k: v for k, v in sd.items() if k != "layers.1.ffn_norm.weight"}
    with pytest.raises(ValueError, match=r"missing key 'layers.1.ffn_norm.weight' \(expected shape \(64,\)\)"):
        llamagen.load_gpt(missing, **TINY_GPT)
    with pytest.raises(ValueError, match=r"unexpected key 'layers.2.ffn_norm.weight'.*try load_gpt\(path, n_layer=3"):
        llamagen.load_gpt({**sd, "layers.2.ffn_norm.weight": sd["norm.weight"]}, **TINY_GPT)
    with pytest.raises(ValueError, match=r"\(10, 64\).*num_classes=10"):
        llamagen.load_gpt(sd, **{**TINY_GPT, "class_dropout_prob": 0.0})
    ignored = {**sd, "layers.0.attention.kv_cache.k_cache": np.zeros((2, 4, 24, 16), np.float32)}
    assert llamagen.load_gpt(ignored, **TINY_GPT).cfg.num_layers == 2
    vq_sd = load_file(FIXTURES / "tiny_vq.safetensors")
    with pytest.raises(ValueError, match=r"'quantize.embedding.weight' has shape \(32, 8\).*need \(16384, 8\).*"
                                         r"codebook_size=32.*ch=32.*z_channels=32.*ch_mult=\(1, 2\)"):
        llamagen.load_vq(vq_sd)


def test_unsupported_args_are_refused():
    sd = load_file(FIXTURES / "tiny_gpt.safetensors")
    with pytest.raises(ValueError, match="cls_token_num=1"):
        llamagen.load_gpt(sd, **TINY_GPT, cls_token_num=2)
    with pytest.raises(ValueError, match="model_type='t2i'"):
        llamagen.load_gpt(sd, **TINY_GPT, model_type="t2i")
    with pytest.raises(ValueError, match=r"unknown GPT model args \['n_layers'\]"):
        llamagen.load_gpt(sd, n_layers=2)
    with pytest.raises(ValueError, match="unknown preset 'GPT-Q'"):
        llamagen.load_gpt(sd, preset="GPT-Q")
