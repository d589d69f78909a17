"""LlamaGen checkpoints (class- and text-conditional GPT, VQ tokenizer) on ar_jax's own transformer and VQ model.

    gen = load_gpt("c2i_B_256.pt", preset="GPT-B")          # LlamaGen ModelArgs as keywords
    logits = gen.logits(tokens, labels)                        # [B, 1 + T, V]; position j predicts token j
    tokens = gen.sample(labels, cfg_scale=4.0, top_k=2000, seed=0)   # [B, block_size]
    vq = load_vq("vq_ds16_c2i.pt", preset="VQ-16")
    images = vq.decode(tokens.reshape(-1, 16, 16))             # [B, 256, 256, 3] in about [-1, 1]

    t2i = load_gpt("t2i_XL_stage1_256.pt", model_type="t2i", preset="GPT-XL")   # cls_token_num=120, caption_dim=2048
    caption_embs, emb_mask = left_pad(t5_embs, t5_mask)        # T5 output [B, 120, 2048], right-padded mask [B, 120]
    tokens = t2i.sample(caption_embs, emb_mask, seed=0)        # CFG 7.5, top-k 1000 (sample_t2i.py's defaults)

Checkpoints are `.safetensors` or the `.pt` files LlamaGen releases (read by `torch_pickle`, which
runs no pickled code). Every key and shape is checked against the model args before conversion;
a mismatch is a ValueError naming the key, both shapes and the args the checkpoint looks like.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ar_jax.convert.torch_pickle import load_torch_zip
from ar_jax.decode import sampling
from ar_jax.models import conditions
from ar_jax.models.transformer import DecodingCache, Transformer, TransformerConfig
from ar_jax.tokenizers import vq as vqlib

Array = jax.Array
StateDict = dict[str, np.ndarray]

# LlamaGen's autoregressive/models/gpt.py ModelArgs defaults, and its GPT_models table.
GPT_DEFAULTS: dict[str, Any] = dict(
    dim=4096, n_layer=32, n_head=32, n_kv_head=None, multiple_of=256, ffn_dim_multiplier=None, rope_base=10000,
    norm_eps=1e-5, initializer_range=0.02, token_dropout_p=0.1, attn_dropout_p=0.0, resid_dropout_p=0.1,
    ffn_dropout_p=0.1, drop_path_rate=0.0, num_classes=1000, caption_dim=2048, class_dropout_prob=0.1,
    model_type="c2i", vocab_size=16384, cls_token_num=1, block_size=256, max_batch_size=32, max_seq_len=2048)
GPT_PRESETS: dict[str, dict[str, int]] = {
    "GPT-B": dict(n_layer=12, n_head=12, dim=768), "GPT-L": dict(n_layer=24, n_head=16, dim=1024),
    "GPT-XL": dict(n_layer=36, n_head=20, dim=1280), "GPT-XXL": dict(n_layer=48, n_head=24, dim=1536),
    "GPT-XXXL": dict(n_layer=48, n_head=40, dim=2560), "GPT-1B": dict(n_layer=22, n_head=32, dim=2048),
    "GPT-3B": dict(n_layer=24, n_head=32, dim=3200), "GPT-7B": dict(n_layer=32, n_head=32, dim=4096)}
# model_type="t2i": the caption rows sample_t2i.py / train_t2i.py use (T5 features padded to 120 tokens), unless given.
T2I_CLS_TOKEN_NUM = 120
# tokenizer/tokenizer_image/vq_model.py ModelArgs defaults, plus the Encoder/Decoder constructor
# arguments VQModel leaves at their defaults (ch, num_res_blocks); ch_mult sets both encoder and decoder.
VQ_DEFAULTS: dict[str, Any] = dict(
    codebook_size=16384, codebook_embed_dim=8, codebook_l2_norm=True, codebook_show_usage=True,
    commit_loss_beta=0.25, entropy_loss_ratio=0.0, encoder_ch_mult=(1, 1, 2, 2, 4), decoder_ch_mult=(1, 1, 2, 2, 4),
    z_channels=256, dropout_p=0.0, ch=128, num_res_blocks=2)
VQ_PRESETS: dict[str, dict[str, Any]] = {
    "VQ-16": dict(encoder_ch_mult=(1, 1, 2, 2, 4), decoder_ch_mult=(1, 1, 2, 2, 4)),
    "VQ-8": dict(encoder_ch_mult=(1, 2, 2, 4), decoder_ch_mult=(1, 2, 2, 4))}

# Keys that may appear in a LlamaGen state dict without being weights of the model.
_IGNORED = re.compile(r"(^freqs_cis$|\.kv_cache\.[kv]_cache$|^quantize\.codebook_used$)")


def read_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> StateDict:
    """A flat `{key: np.ndarray}` from `.safetensors`, a torch `.pt` zip, or a mapping.

    A `.pt` may hold the state dict bare or under "model" / "module" / "state_dict" / "ema" (LlamaGen's
    training scripts save `{"model": ..., "optimizer": ..., "args": ...}`). DDP's "module." and
    torch.compile's "_orig_mod." prefixes are removed.
    """
    if isinstance(source, Mapping):
        obj: Any = dict(source)
    elif str(source).endswith(".safetensors"):
        obj = _load_safetensors(str(source))
    else:
        obj = load_torch_zip(str(source))
    if isinstance(obj, Mapping) and not all(isinstance(v, np.ndarray) or hasattr(v, "shape") for v in obj.values()):
        for name in ("model", "module", "state_dict", "ema"):
            if isinstance(obj.get(name), Mapping):
                obj = obj[name]
                break
        else:
            raise ValueError(f"{source!s:.200}: no state dict found; expected tensors at the top level or under "
                             f"'model', 'module', 'state_dict' or 'ema', found keys {sorted(map(str, obj))[:10]}.")
    sd = {}
    for k, v in obj.items():
        if not hasattr(v, "shape"):
            raise ValueError(f"{source!s:.200}: entry {k!r} is a {type(v).__name__}, not a tensor.")
        k = re.sub(r"^(module\.|_orig_mod\.)+", "", str(k))
        sd[k] = np.asarray(v)
    return sd


def _load_safetensors(path: str) -> StateDict:
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        try:
            return {k: f.get_tensor(k) for k in f.keys()}
        except (TypeError, ValueError):  # bfloat16 has no numpy dtype in safetensors: go through JAX
            pass
    with safe_open(path, framework="flax") as f:
        return {k: np.asarray(f.get_tensor(k)) for k in f.keys()}


def _resolve(kind: str, defaults: dict[str, Any], presets: dict[str, dict[str, Any]], preset: str | None,
             model_args: dict[str, Any]) -> dict[str, Any]:
    """LlamaGen's defaults, then the preset, then the caller's model args; unknown names refused."""
    unknown = sorted(set(model_args) - set(defaults) - ({"ch_mult"} if kind == "VQ" else set()))
    if unknown:
        raise ValueError(f"unknown {kind} model args {unknown}; LlamaGen's are {sorted(defaults)}.")
    args = dict(defaults)
    if preset is not None:
        key = preset.upper().replace("_", "-")
        if key not in presets:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(presets)}.")
        args.update(presets[key])
    if "ch_mult" in model_args:  # shorthand for encoder_ch_mult = decoder_ch_mult
        model_args = dict(model_args)
        mult = tuple(model_args.pop("ch_mult"))
        args.update(encoder_ch_mult=mult, decoder_ch_mult=mult)
    args.update(model_args)
    return args


def _fmt(args: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())


def _check_keys(sd: StateDict, expected: dict[str, tuple[int, ...]], used: str, hint: dict[str, Any],
                loader: str) -> None:
    """ValueError naming each missing/extra key or mismatched shape, the args used and the args to try."""
    problems = [f"key {k!r} has shape {tuple(sd[k].shape)} in the checkpoint but the model args need {s}"
                for k, s in expected.items() if k in sd and tuple(sd[k].shape) != s]
    problems += [f"missing key {k!r} (expected shape {s})" for k, s in expected.items() if k not in sd]
    problems += [f"unexpected key {k!r} with shape {tuple(v.shape)}" for k, v in sd.items()
                 if k not in expected and not _IGNORED.search(k)]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        try_ = (f"The checkpoint looks like {_fmt(hint)}: try {loader}(path, {_fmt(hint)})." if hint else
                "The shapes do not tell which args differ; check n_head / n_kv_head / multiple_of.")
        raise ValueError("checkpoint does not match the model args: " + "; ".join(problems[:5]) + more
                         + f". Model args used: {used}. " + try_)


# ----------------------------------------------------------------------------------------------- GPT


def gpt_args(preset: str | None = None, **model_args: Any) -> dict[str, Any]:
    """LlamaGen's GPT ModelArgs: its defaults, then `preset`, then `model_args` (a t2i model: 120 caption rows)."""
    args = _resolve("GPT", GPT_DEFAULTS, GPT_PRESETS, preset, model_args)
    if args["model_type"] == "t2i" and "cls_token_num" not in model_args:
        args["cls_token_num"] = T2I_CLS_TOKEN_NUM
    return args


def gpt_config(args: Mapping[str, Any]) -> TransformerConfig:
    """ar_jax's TransformerConfig for resolved LlamaGen GPT ModelArgs: class labels (c2i) or caption features
    (t2i: `conditions` kind "caption", `cls_token_num` rows of `caption_dim` features)."""
    t2i = args["model_type"] == "t2i"
    if args["model_type"] not in ("c2i", "t2i"):
        raise ValueError(f"model_type={args['model_type']!r} is not one of LlamaGen's 'c2i', 't2i'.")
    if not t2i and args["cls_token_num"] != 1:
        raise ValueError(f"cls_token_num={args['cls_token_num']}: LlamaGen's c2i label embedder emits one class "
                         "token, so a c2i model has cls_token_num=1; pass cls_token_num=1.")
    cfg = TransformerConfig(
        vocab_size=args["vocab_size"], seq_len=args["block_size"], num_classes=0 if t2i else args["num_classes"],
        dim=args["dim"], num_layers=args["n_layer"], num_heads=args["n_head"], num_kv_heads=args["n_kv_head"],
        multiple_of=args["multiple_of"], ffn_dim_multiplier=args["ffn_dim_multiplier"], rope="2d",
        rope_base=float(args["rope_base"]), norm_eps=args["norm_eps"], cls_token_num=args["cls_token_num"],
        null_class=t2i or args["class_dropout_prob"] > 0, **(
            dict(condition="caption", caption_dim=args["caption_dim"]) if t2i else {}))
    cfg.validate()
    return cfg


NULL_CAPTION = "cls_embedding.uncond_embedding"  # t2i: the null caption, a buffer in caption-feature space


def _null_rows(sd: StateDict, cfg: TransformerConfig) -> int:
    """Rows of the null caption to expect: LlamaGen builds it with 120 rows whatever `cls_token_num` is, and its
    forward keeps the first `cls_token_num` rows of a projected caption; so a file with more rows is accepted (the
    first `cls_token_num` are used) and one with fewer refused."""
    w = sd.get(NULL_CAPTION)
    return max(cfg.cls_token_num, w.shape[0] if w is not None and w.ndim == 2 else 0)


def _gpt_expected(cfg: TransformerConfig, null_rows: int | None = None) -> dict[str, tuple[int, ...]]:
    D, V, hd, F = cfg.dim, cfg.vocab_size, cfg.head_dim, cfg.hidden_dim
    if cfg.condition == "caption":  # LlamaGen's CaptionEmbedder: cap_proj = fc2(gelu_tanh(fc1(x))), no biases
        cond = {NULL_CAPTION: (null_rows or cfg.cls_token_num, cfg.caption_dim),
                "cls_embedding.cap_proj.fc1.weight": (D, cfg.caption_dim), "cls_embedding.cap_proj.fc2.weight": (D, D)}
    else:
        cond = {"cls_embedding.embedding_table.weight": (cfg.class_rows, D)}
    exp = {"tok_embeddings.weight": (V, D), **cond, "norm.weight": (D,), "output.weight": (V, D)}
    for i in range(cfg.num_layers):
        p = f"layers.{i}."
        exp |= {p + "attention.wqkv.weight": ((cfg.num_heads + 2 * cfg.kv_heads) * hd, D),
                p + "attention.wo.weight": (D, cfg.num_heads * hd), p + "feed_forward.w1.weight": (F, D),
                p + "feed_forward.w3.weight": (F, D), p + "feed_forward.w2.weight": (D, F),
                p + "attention_norm.weight": (D,), p + "ffn_norm.weight": (D,)}
    return exp


def _gpt_hint(sd: StateDict, args: dict[str, Any]) -> dict[str, Any]:
    """The model args the checkpoint's shapes imply, where they differ from `args`."""
    hint: dict[str, Any] = {}
    if "tok_embeddings.weight" in sd:
        hint["dim"] = sd["tok_embeddings.weight"].shape[1]
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"layers\.(\d+)\.", k))}
    if layers:
        hint["n_layer"] = max(layers) + 1
    if "tok_embeddings.weight" in sd:
        hint["vocab_size"] = sd["tok_embeddings.weight"].shape[0]
    for name, p in GPT_PRESETS.items():
        if (p["dim"], p["n_layer"]) == (hint.get("dim"), hint.get("n_layer")):
            hint = {"preset": name, **{k: v for k, v in hint.items() if k not in p}}
            args = {**args, **p}
    if "cls_embedding.cap_proj.fc1.weight" in sd:  # a t2i checkpoint
        hint["model_type"], hint["caption_dim"] = "t2i", sd["cls_embedding.cap_proj.fc1.weight"].shape[1]
        rows = sd[NULL_CAPTION].shape[0] if NULL_CAPTION in sd else None
        if rows is not None and (args["model_type"] != "t2i" or rows < args["cls_token_num"]):
            hint["cls_token_num"] = rows
    elif "cls_embedding.embedding_table.weight" in sd:
        hint["model_type"] = "c2i"
        hint["num_classes"] = sd["cls_embedding.embedding_table.weight"].shape[0] - int(args["class_dropout_prob"] > 0)
    wqkv = sd.get("layers.0.attention.wqkv.weight")
    dim, heads = hint.get("dim", args["dim"]), args["n_head"]
    if wqkv is not None and dim % heads == 0 and wqkv.shape[0] != 3 * dim:
        hint["n_kv_head"] = (wqkv.shape[0] // (dim // heads) - heads) // 2
    diff = {k: v for k, v in hint.items() if k == "preset" or args.get(k) != v}
    return diff if len(diff) > ("preset" in diff) else {}


def gpt_params_from_state_dict(sd: StateDict, args: dict[str, Any], cfg: TransformerConfig) -> dict[str, Any]:
    """LlamaGen GPT state dict -> params of `Transformer(cfg)`, after checking every key and shape."""
    t2i = cfg.condition == "caption"
    cond_args = ("cls_token_num", "caption_dim") if t2i else ("num_classes", "class_dropout_prob")
    _check_keys(sd, _gpt_expected(cfg, _null_rows(sd, cfg) if t2i else None),
                _fmt({k: args[k] for k in ("model_type", "dim", "n_layer", "n_head", "n_kv_head", "vocab_size",
                                           *cond_args, "multiple_of", "ffn_dim_multiplier")}),
                _gpt_hint(sd, args), "load_gpt")
    f32 = lambda k: np.asarray(sd[k], np.float32)
    D, H, KV, hd = cfg.dim, cfg.num_heads, cfg.kv_heads, cfg.head_dim
    params: dict[str, Any] = {
        "tok_embeddings": f32("tok_embeddings.weight"),
        "norm": {"scale": f32("norm.weight")}, "output": f32("output.weight").T}
    if t2i:  # Flax kernels [in, out]; the null caption's first cls_token_num rows (see _null_rows)
        params |= {"uncond_embedding": f32(NULL_CAPTION)[: cfg.cls_token_num],
                   "cap_fc1": f32("cls_embedding.cap_proj.fc1.weight").T,
                   "cap_fc2": f32("cls_embedding.cap_proj.fc2.weight").T}
    else:
        params["cls_embedding"] = f32("cls_embedding.embedding_table.weight")[:, None]  # [rows, 1, D]
    for i in range(cfg.num_layers):
        g = lambda name, i=i: f32(f"layers.{i}.{name}.weight")
        q, k, v = np.split(g("attention.wqkv"), [H * hd, (H + KV) * hd])  # rows [q | k | v]
        params[f"layers_{i}"] = {
            "attention": {"wq": q.T.reshape(D, H, hd), "wk": k.T.reshape(D, KV, hd),
                          "wv": v.T.reshape(D, KV, hd), "wo": g("attention.wo").T.reshape(H, hd, D)},
            "attention_norm": {"scale": g("attention_norm")}, "ffn_norm": {"scale": g("ffn_norm")},
            "feed_forward": {n: g(f"feed_forward.{n}").T for n in ("w1", "w2", "w3")}}
    return jax.tree.map(jnp.asarray, params)


@dataclasses.dataclass
class _ConvertedGPT:
    """`cfg` and `params` of ar_jax's Transformer for a LlamaGen GPT, plus its model args."""

    cfg: TransformerConfig
    params: Any = dataclasses.field(repr=False)
    model_args: dict[str, Any] = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        self._apply = jax.jit(Transformer(self.cfg).apply)
        self._decoding = DecodingCache()

    def _tokens(self, tokens: Any, batch: int) -> np.ndarray:
        tokens, cfg = np.asarray(tokens), self.cfg
        if tokens.ndim != 2 or tokens.shape[0] != batch:
            raise ValueError(f"tokens must be [B={batch}, T] (one row per condition); got shape {tokens.shape}.")
        if tokens.shape[1] > cfg.seq_len:
            raise ValueError(f"{tokens.shape[1]} tokens exceed block_size={cfg.seq_len}; pass at most that many.")
        if tokens.size and not 0 <= tokens.min() <= tokens.max() < cfg.vocab_size:
            raise ValueError(f"tokens must be in [0, vocab_size={cfg.vocab_size}); got {tokens.min()}..{tokens.max()}.")
        return tokens.astype(np.int32)

    def _sample(self, cond: Any, cfg_scale: float, temperature: float, top_k: int, top_p: float, greedy: bool,
                seed: int, prefix: Any, return_logits: bool) -> Array | tuple[Array, Array]:
        """LlamaGen's conventions: guidance `u + s*(c - u)` only when `cfg_scale > 1` (<= 1 means none), then
        temperature, top-k (clamped to the vocabulary), top-p."""
        params = self._decoding.get(self.params)  # prepared for the backend, once per params object
        return sampling.generate(params, self.cfg, cond, jax.random.key(seed), prefix=prefix,
                                 temperature=temperature, top_k=min(int(top_k), self.cfg.vocab_size), top_p=top_p,
                                 greedy=greedy, cfg_scale=cfg_scale if cfg_scale > 1.0 else 1.0,
                                 return_logits=return_logits)


@dataclasses.dataclass
class LlamaGenGPT(_ConvertedGPT):
    """A converted LlamaGen c2i GPT: `cfg` and `params` of ar_jax's Transformer, plus the model args."""

    def logits(self, tokens: Any, labels: Any) -> Array:
        """Teacher forcing: tokens `[B, T]` (T <= block_size), labels `[B]` -> logits `[B, 1 + T, V]` float32.

        Position j is the output after the class token and tokens 0..j-1, so it predicts token j.
        Labels may include the null class `num_classes` (the unconditional branch of CFG).
        """
        labels, cfg = np.asarray(labels), self.cfg
        if labels.ndim != 1:
            raise ValueError(f"labels must be [B]; got shape {labels.shape}.")
        tokens = self._tokens(tokens, labels.shape[0])
        if labels.size and not 0 <= labels.min() <= labels.max() < cfg.class_rows:
            null = ", plus the null class" if cfg.null_class else ""
            raise ValueError(f"labels must be in [0, {cfg.class_rows}) (num_classes={cfg.num_classes}{null}); "
                             f"got {labels.min()}..{labels.max()}.")
        out, _ = self._apply({"params": self.params}, jnp.asarray(tokens), jnp.asarray(labels, jnp.int32))
        return out

    def sample(self, labels: Any, *, cfg_scale: float = 1.0, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0, greedy: bool = False, seed: int = 0, prefix: Any = None,
               return_logits: bool = False) -> Array | tuple[Array, Array]:
        """Image tokens `[B, block_size]` for class `labels [B]` through ar_jax's KV-cache sampler.

        LlamaGen's conventions: guidance `u + s*(c - u)` only when `cfg_scale > 1` (<= 1 means none),
        then temperature, top-k (clamped to the vocabulary), top-p. With `return_logits` also the
        (guided) logits each token was drawn from, `[B, block_size - P, V]`.
        """
        return self._sample(labels, cfg_scale, temperature, top_k, top_p, greedy, seed, prefix, return_logits)


def left_pad(t5_embs: Any, t5_mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """`sample_t2i.py`'s preparation of a T5 encoder's right-padded output for LlamaGen's t2i GPT.

    `t5_embs [B, L, F]` and `t5_mask [B, L]` (the tokenizer's attention mask: v ones, then zeros; L = cls_token_num,
    120 for the released models) -> `(caption_embs [B, L, F] float32, emb_mask [B, L])`: each caption's valid rows
    moved, in order, to the end (padding rows first), the mask flipped to zeros-then-ones, padding rows zeroed.
    """
    embs, mask = np.asarray(t5_embs, np.float32), np.asarray(t5_mask)
    if embs.ndim != 3 or mask.shape != embs.shape[:2]:
        raise ValueError(f"t5_embs must be [B, L, F] and t5_mask [B, L]; got shapes {embs.shape} and {mask.shape}.")
    L = mask.shape[1]
    valid = mask.astype(bool).sum(1)
    right = np.arange(L)[None] < valid[:, None]  # what a right-padded mask of these lengths is
    bad = ((mask != 0) != right).any(-1) | ~np.isin(mask, (0, 1)).all(-1)
    if bad.any():
        b = int(np.argmax(bad))
        raise ValueError(f"t5_mask row {b} is {mask[b].tolist()[:16]}...: left_pad takes a T5 tokenizer's attention "
                         "mask, right-padded (ones, then zeros); LlamaGen-ready features need no left_pad.")
    order = (np.arange(L)[None] + valid[:, None]) % L  # row i of the result is row (i + v) % L of the input
    emb_mask = np.flip(mask, -1)
    return np.take_along_axis(embs, order[..., None], 1) * (emb_mask[..., None] != 0), emb_mask


def check_captions(cfg: TransformerConfig, caption_embs: Any, emb_mask: Any = None,
                   null: Any = None) -> dict[str, np.ndarray]:
    """LlamaGen-ready caption features as a caption condition (`ar_jax.models.conditions`) of `cfg`, or ValueError
    naming what is wrong (shapes, a mask not of 0/1, non-zero padding rows: raw T5 output, not `left_pad`'s)."""
    if cfg.condition != "caption":
        raise ValueError(f"caption features need a caption-feature model (a LlamaGen t2i GPT), not a "
                         f"condition={cfg.condition!r} one.")
    embs, C, Fd = np.asarray(caption_embs, np.float32), cfg.cls_token_num, cfg.caption_dim
    if embs.ndim != 3 or embs.shape[1:] != (C, Fd) or embs.shape[0] == 0:
        raise ValueError(f"caption_embs must be [B, cls_token_num={C}, caption_dim={Fd}]; got shape {embs.shape} "
                         f"(pad the T5 output to {C} tokens, then llamagen.left_pad).")
    B = embs.shape[0]
    mask = np.ones((B, C), bool) if emb_mask is None else np.asarray(emb_mask)
    if mask.shape != (B, C) or not np.isin(mask, (0, 1)).all():
        raise ValueError(f"emb_mask must be [B={B}, {C}] of 0/1 (1: a caption token); got shape {mask.shape}.")
    mask = mask.astype(bool)
    bad = np.argwhere((embs != 0).any(-1) & ~mask)
    if len(bad):
        raise ValueError(f"caption_embs row {tuple(bad[0].tolist())} is padding (emb_mask 0) but not zero: LlamaGen "
                         "zeroes padding rows after moving the valid ones to the end; pass "
                         "llamagen.left_pad(t5_embs, t5_mask).")
    null = np.zeros(B, bool) if null is None else np.broadcast_to(np.asarray(null, bool), (B,))
    return conditions.check(cfg, {"features": embs, "mask": mask, "null": null})


@dataclasses.dataclass
class LlamaGenT2I(_ConvertedGPT):
    """A converted LlamaGen t2i GPT: the condition is `cls_token_num` rows of caption features (FLAN-T5-XL's, 2048
    wide, for the released models), projected by its `cap_proj`; its saved null caption drives CFG.

    `caption_embs [B, cls_token_num, caption_dim]` and `emb_mask [B, cls_token_num]` are taken as LlamaGen's
    `generate()` receives them: left-padded (valid rows last, mask zeros-then-ones), padding rows zero
    (`left_pad` makes them from a T5 encoder's output). `emb_mask=None` means every row is valid.
    """

    def condition(self, caption_embs: Any, emb_mask: Any = None, null: Any = None) -> dict[str, np.ndarray]:
        """The checked caption condition (`check_captions`); `null [B]` bool picks the null caption."""
        return check_captions(self.cfg, caption_embs, emb_mask, null)

    def logits(self, tokens: Any, caption_embs: Any, emb_mask: Any = None, *, image_only: bool = False,
               null: Any = None) -> Array:
        """Teacher forcing, LlamaGen's eval-mode forward: tokens `[B, T]` (T <= block_size) -> logits float32
        `[B, cls_token_num + T, V]` for every position (padding caption rows give 0), or with `image_only` the
        `[B, 1 + T, V]` that predict image tokens (`[:, j]` predicts token j). `null [B]`: use the null caption
        (CFG's unconditional branch, with the same `emb_mask`)."""
        cond = self.condition(caption_embs, emb_mask, null)
        tokens = self._tokens(tokens, cond["mask"].shape[0])
        out, _ = self._apply({"params": self.params}, jnp.asarray(tokens), jax.tree.map(jnp.asarray, cond))
        return out[:, self.cfg.cls_token_num - 1:] if image_only else out

    def sample(self, caption_embs: Any, emb_mask: Any = None, *, cfg_scale: float = 7.5, temperature: float = 1.0,
               top_k: int = 1000, top_p: float = 1.0, greedy: bool = False, seed: int = 0, prefix: Any = None,
               return_logits: bool = False) -> Array | tuple[Array, Array]:
        """Image tokens `[B, block_size]` for the captions through ar_jax's KV-cache sampler; defaults are
        `sample_t2i.py`'s (CFG 7.5, top-k 1000). The unconditional half is the null caption with each prompt's own
        `emb_mask`, as LlamaGen's `generate()`. With `return_logits` also the (guided) logits of each token."""
        return self._sample(self.condition(caption_embs, emb_mask), cfg_scale, temperature, top_k, top_p, greedy,
                            seed, prefix, return_logits)


def load_gpt(path: str | os.PathLike | Mapping[str, Any], preset: str | None = None,
             **model_args: Any) -> LlamaGenGPT | LlamaGenT2I:
    """Load a LlamaGen GPT; `model_args` are LlamaGen ModelArgs fields over its defaults and `preset`.

    E.g. `load_gpt("c2i_L_384.pt", preset="GPT-L", block_size=576)`, or for text-to-image
    `load_gpt("t2i_XL_stage2_512.pt", model_type="t2i", preset="GPT-XL", block_size=1024)` (`cls_token_num` 120
    unless given; `caption_dim` 2048, FLAN-T5-XL's). Fields that only matter for training (dropouts,
    initializer_range, max_batch_size, ...) are accepted and ignored. Loading is strict (unlike `sample_t2i.py`'s
    `strict=False`): a missing, extra or mis-shaped key is a ValueError naming it and the args to try.
    """
    args = gpt_args(preset, **model_args)
    cfg = gpt_config(args)
    cls = LlamaGenT2I if cfg.condition == "caption" else LlamaGenGPT
    return cls(cfg, gpt_params_from_state_dict(read_state_dict(path), args, cfg), args)


# ------------------------------------------------------------------------------------------------ VQ


def vq_config(args: Mapping[str, Any]) -> vqlib.VQConfig:
    """ar_jax's VQConfig for resolved LlamaGen VQ ModelArgs."""
    cfg = vqlib.VQConfig(
        codebook_size=args["codebook_size"], codebook_embed_dim=args["codebook_embed_dim"],
        codebook_l2_norm=bool(args["codebook_l2_norm"]), commit_loss_beta=args["commit_loss_beta"], ch=args["ch"],
        ch_mult=tuple(args["encoder_ch_mult"]), decoder_ch_mult=tuple(args["decoder_ch_mult"]),
        z_channels=args["z_channels"], num_res_blocks=args["num_res_blocks"], dropout=args["dropout_p"])
    cfg.validate()
    return cfg


def _vq_torch_key(path: tuple[str, ...]) -> str:
    """Flax path `(encoder, conv_blocks_0, res_1, norm1, scale)` -> `encoder.conv_blocks.0.res.1.norm1.weight`."""
    if path == ("quantize", "codebook"):
        return "quantize.embedding.weight"
    mods = [re.sub(r"^(conv_blocks|res|attn|mid)_(\d+)$", r"\1.\2", p) for p in path[:-1]]
    return ".".join([*mods, {"kernel": "weight", "scale": "weight", "bias": "bias"}[path[-1]]])


def _vq_hint(sd: StateDict, args: dict[str, Any]) -> dict[str, Any]:
    """The VQ model args the checkpoint's shapes imply, where they differ from `args`."""
    hint: dict[str, Any] = {}
    if "quantize.embedding.weight" in sd:
        hint["codebook_size"], hint["codebook_embed_dim"] = sd["quantize.embedding.weight"].shape
    if "encoder.conv_in.weight" in sd:
        hint["ch"] = ch = sd["encoder.conv_in.weight"].shape[0]
        levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r"encoder\.conv_blocks\.(\d+)\.", k))})
        mult = [sd.get(f"encoder.conv_blocks.{i}.res.0.conv1.weight") for i in levels]
        if levels and all(w is not None for w in mult):
            hint["encoder_ch_mult"] = tuple(int(w.shape[0] // ch) for w in mult)
        dec = [sd.get(f"decoder.conv_blocks.{i}.res.0.conv1.weight") for i in levels]
        if levels and all(w is not None for w in dec):
            hint["decoder_ch_mult"] = tuple(int(w.shape[0] // ch) for w in dec[::-1])
        res = {int(m.group(1)) for k in sd if (m := re.match(r"encoder\.conv_blocks\.0\.res\.(\d+)\.", k))}
        if res:
            hint["num_res_blocks"] = max(res) + 1
    if "encoder.conv_out.weight" in sd:
        hint["z_channels"] = sd["encoder.conv_out.weight"].shape[0]
    diff = {k: v for k, v in hint.items() if args.get(k) != v and not (isinstance(v, tuple) and tuple(args[k]) == v)}
    if diff.get("encoder_ch_mult") and diff.get("encoder_ch_mult") == diff.get("decoder_ch_mult"):
        diff["ch_mult"] = diff.pop("encoder_ch_mult")
        diff.pop("decoder_ch_mult")
    return diff


def vq_params_from_state_dict(sd: StateDict, args: dict[str, Any], cfg: vqlib.VQConfig) -> Any:
    """LlamaGen VQModel state dict -> params of `VQModel(cfg)`, after checking every key and shape."""
    shapes = jax.tree_util.tree_flatten_with_path(vqlib.param_shapes(cfg))[0]
    torch_shape = lambda s: (s[3], s[2], s[0], s[1]) if len(s) == 4 else s  # HWIO -> OIHW
    paths = {tuple(k.key for k in p): _vq_torch_key(tuple(k.key for k in p)) for p, _ in shapes}
    expected = {paths[tuple(k.key for k in p)]: torch_shape(tuple(leaf.shape)) for p, leaf in shapes}
    expected = dict(sorted(expected.items(), key=lambda kv: not kv[0].startswith("quantize.")))  # codebook first
    used = _fmt({k: args[k] for k in ("codebook_size", "codebook_embed_dim", "ch", "encoder_ch_mult",
                                       "decoder_ch_mult", "z_channels", "num_res_blocks")})
    _check_keys(sd, expected, used, _vq_hint(sd, args), "load_vq")
    params: dict[str, Any] = {}
    for path, key in paths.items():
        w = np.asarray(sd[key], np.float32)
        node = params
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = jnp.asarray(w.transpose(2, 3, 1, 0) if w.ndim == 4 else w)  # OIHW -> HWIO
    return params


@dataclasses.dataclass
class LlamaGenVQ:
    """A converted LlamaGen VQModel: `cfg` and `params` of ar_jax's VQModel, plus the model args."""

    cfg: vqlib.VQConfig
    params: Any = dataclasses.field(repr=False)
    model_args: dict[str, Any] = dataclasses.field(repr=False)

    def _images(self, images: Any) -> Array:
        images = np.asarray(images)
        f, c = self.cfg.downsample, self.cfg.in_channels
        if images.ndim != 4 or images.shape[-1] != c:
            hint = " (NCHW? transpose to NHWC)" if images.ndim == 4 and images.shape[1] == c else ""
            raise ValueError(f"images must be NHWC [B, H, W, {c}]; got shape {images.shape}{hint}.")
        if images.shape[1] % f or images.shape[2] % f:
            raise ValueError(f"image height and width must be multiples of {f} (the downsampling); got "
                             f"{images.shape[1]}x{images.shape[2]}.")
        if not np.issubdtype(images.dtype, np.floating):
            raise ValueError(f"images must be floats in [-1, 1], got {images.dtype}; use uint8 / 127.5 - 1.")
        return jnp.asarray(images, jnp.float32)

    def encode(self, images: Any, return_quant: bool = False) -> Array | tuple[Array, Array]:
        """images `[B, H, W, 3]` in [-1, 1] -> codes `[B, H/f, W/f]` int32 (and quant `[B, h, w, D]`)."""
        codes, quant = vqlib.encode(self.params, self.cfg, self._images(images))
        return (codes, quant) if return_quant else codes

    def decode(self, codes: Any) -> Array:
        """codes `[B, h, w]` -> images `[B, h*f, w*f, 3]`, about [-1, 1] (not clipped)."""
        codes = np.asarray(codes)
        if codes.ndim != 3:
            raise ValueError(f"codes must be [B, h, w]; got shape {codes.shape} (reshape a flat [B, h*w]).")
        if codes.size and not 0 <= codes.min() <= codes.max() < self.cfg.codebook_size:
            raise ValueError(f"codes must be in [0, codebook_size={self.cfg.codebook_size}); got "
                             f"{codes.min()}..{codes.max()}.")
        return vqlib.decode_codes(self.params, self.cfg, jnp.asarray(codes, jnp.int32))

    def decode_quant(self, quant: Any) -> Array:
        """Quantised latents `[B, h, w, D]` -> images `[B, h*f, w*f, 3]`."""
        return vqlib.decode(self.params, self.cfg, jnp.asarray(quant, jnp.float32))


def load_vq(path: str | os.PathLike | Mapping[str, Any], preset: str | None = None, **vq_args: Any) -> LlamaGenVQ:
    """Load a LlamaGen VQModel; `vq_args` are its ModelArgs fields (plus `ch`, `num_res_blocks`, `ch_mult`).

    E.g. `load_vq("vq_ds16_c2i.pt")` (VQ-16 is the default) or `load_vq(p, preset="VQ-8")`.
    """
    args = _resolve("VQ", VQ_DEFAULTS, VQ_PRESETS, preset, vq_args)
    cfg = vq_config(args)
    return LlamaGenVQ(cfg, vq_params_from_state_dict(read_state_dict(path), args, cfg), args)


def save_workdirs(gen: LlamaGenGPT | LlamaGenT2I | None, vq: LlamaGenVQ, workdir: str | os.PathLike,
                  image_size: int | None = None) -> Any:
    """Save converted models as ar_jax workdirs (`workdir` for the GPT, `workdir/tokenizer` for the VQ), so that
    `ar_jax.load(workdir)` and `sample.py --workdir` need no conversion; see `llamagen_workdir.save_workdirs`."""
    from ar_jax.convert import llamagen_workdir

    return llamagen_workdir.save_workdirs(gen, vq, workdir, image_size)


if __name__ == "__main__":  # python -m ar_jax.convert.llamagen --gpt P --vq P --preset GPT-B --out W
    from ar_jax.convert import llamagen_workdir

    llamagen_workdir.main()
