"""LlamaGen checkpoints (class-conditional GPT and VQ tokenizer) on ar_jax's own transformer and VQ model.

    gen = load_gpt("c2i_B_256.pt", preset="GPT-B")          # LlamaGen ModelArgs as keywords
    logits = gen.logits(tokens, labels)                        # [B, 1 + T, V]; position j predicts token j
    tokens = gen.sample(labels, cfg_scale=4.0, top_k=2000, seed=0)   # [B, block_size]
    vq = load_vq("vq_ds16_c2i.pt", preset="VQ-16")
    images = vq.decode(tokens.reshape(-1, 16, 16))             # [B, 256, 256, 3] in about [-1, 1]

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


def gpt_config(args: Mapping[str, Any]) -> TransformerConfig:
    """ar_jax's TransformerConfig for resolved LlamaGen GPT ModelArgs (c2i only)."""
    if args["model_type"] != "c2i":
        raise ValueError(f"model_type={args['model_type']!r} is not supported: only class-conditional "
                         "('c2i') LlamaGen models convert; t2i needs the caption embedder.")
    if args["cls_token_num"] != 1:
        raise ValueError(f"cls_token_num={args['cls_token_num']}: LlamaGen's c2i label embedder emits one class "
                         "token, so a c2i model has cls_token_num=1; pass cls_token_num=1.")
    cfg = TransformerConfig(
        vocab_size=args["vocab_size"], seq_len=args["block_size"], num_classes=args["num_classes"],
        dim=args["dim"], num_layers=args["n_layer"], num_heads=args["n_head"], num_kv_heads=args["n_kv_head"],
        multiple_of=args["multiple_of"], ffn_dim_multiplier=args["ffn_dim_multiplier"], rope="2d",
        rope_base=float(args["rope_base"]), norm_eps=args["norm_eps"], cls_token_num=1,
        null_class=args["class_dropout_prob"] > 0)
    cfg.validate()
    return cfg


def _gpt_expected(cfg: TransformerConfig) -> dict[str, tuple[int, ...]]:
    D, V, hd, F = cfg.dim, cfg.vocab_size, cfg.head_dim, cfg.hidden_dim
    exp = {"tok_embeddings.weight": (V, D), "cls_embedding.embedding_table.weight": (cfg.class_rows, D),
           "norm.weight": (D,), "output.weight": (V, D)}
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
    if "cls_embedding.embedding_table.weight" in sd:
        hint["num_classes"] = sd["cls_embedding.embedding_table.weight"].shape[0] - int(args["class_dropout_prob"] > 0)
    wqkv = sd.get("layers.0.attention.wqkv.weight")
    dim, heads = hint.get("dim", args["dim"]), args["n_head"]
    if wqkv is not None and dim % heads == 0 and wqkv.shape[0] != 3 * dim:
        hint["n_kv_head"] = (wqkv.shape[0] // (dim // heads) - heads) // 2
    diff = {k: v for k, v in hint.items() if k == "preset" or args.get(k) != v}
    return diff if len(diff) > ("preset" in diff) else {}


def gpt_params_from_state_dict(sd: StateDict, args: dict[str, Any], cfg: TransformerConfig) -> dict[str, Any]:
    """LlamaGen GPT state dict -> params of `Transformer(cfg)`, after checking every key and shape."""
    _check_keys(sd, _gpt_expected(cfg), _fmt({k: args[k] for k in ("dim", "n_layer", "n_head", "n_kv_head",
                "vocab_size", "num_classes", "class_dropout_prob", "multiple_of", "ffn_dim_multiplier")}),
                _gpt_hint(sd, args), "load_gpt")
    f32 = lambda k: np.asarray(sd[k], np.float32)
    D, H, KV, hd = cfg.dim, cfg.num_heads, cfg.kv_heads, cfg.head_dim
    params: dict[str, Any] = {
        "tok_embeddings": f32("tok_embeddings.weight"),
        "cls_embedding": f32("cls_embedding.embedding_table.weight")[:, None],  # [rows, 1, D]
        "norm": {"scale": f32("norm.weight")}, "output": f32("output.weight").T}
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
class LlamaGenGPT:
    """A converted LlamaGen c2i GPT: `cfg` and `params` of ar_jax's Transformer, plus the model args."""

    cfg: TransformerConfig
    params: Any = dataclasses.field(repr=False)
    model_args: dict[str, Any] = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        self._apply = jax.jit(Transformer(self.cfg).apply)
        self._decoding = DecodingCache()

    def logits(self, tokens: Any, labels: Any) -> Array:
        """Teacher forcing: tokens `[B, T]` (T <= block_size), labels `[B]` -> logits `[B, 1 + T, V]` float32.

        Position j is the output after the class token and tokens 0..j-1, so it predicts token j.
        Labels may include the null class `num_classes` (the unconditional branch of CFG).
        """
        tokens, labels = np.asarray(tokens), np.asarray(labels)
        cfg = self.cfg
        if tokens.ndim != 2 or labels.shape != tokens.shape[:1]:
            raise ValueError(f"tokens must be [B, T] and labels [B]; got {tokens.shape} and {labels.shape}.")
        if tokens.shape[1] > cfg.seq_len:
            raise ValueError(f"{tokens.shape[1]} tokens exceed block_size={cfg.seq_len}; pass at most that many.")
        if tokens.size and not 0 <= tokens.min() <= tokens.max() < cfg.vocab_size:
            raise ValueError(f"tokens must be in [0, vocab_size={cfg.vocab_size}); got {tokens.min()}..{tokens.max()}.")
        if labels.size and not 0 <= labels.min() <= labels.max() < cfg.class_rows:
            null = ", plus the null class" if cfg.null_class else ""
            raise ValueError(f"labels must be in [0, {cfg.class_rows}) (num_classes={cfg.num_classes}{null}); "
                             f"got {labels.min()}..{labels.max()}.")
        out, _ = self._apply({"params": self.params}, jnp.asarray(tokens, jnp.int32), jnp.asarray(labels, jnp.int32))
        return out

    def sample(self, labels: Any, *, cfg_scale: float = 1.0, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0, greedy: bool = False, seed: int = 0, prefix: Any = None,
               return_logits: bool = False) -> Array | tuple[Array, Array]:
        """Image tokens `[B, block_size]` for class `labels [B]` through ar_jax's KV-cache sampler.

        LlamaGen's conventions: guidance `u + s*(c - u)` only when `cfg_scale > 1` (<= 1 means none),
        then temperature, top-k (clamped to the vocabulary), top-p. With `return_logits` also the
        (guided) logits each token was drawn from, `[B, block_size - P, V]`.
        """
        params = self._decoding.get(self.params)  # prepared for the backend, once per params object
        return sampling.generate(params, self.cfg, labels, jax.random.key(seed), prefix=prefix,
                                 temperature=temperature, top_k=min(int(top_k), self.cfg.vocab_size), top_p=top_p,
                                 greedy=greedy, cfg_scale=cfg_scale if cfg_scale > 1.0 else 1.0,
                                 return_logits=return_logits)


def load_gpt(path: str | os.PathLike | Mapping[str, Any], preset: str | None = None, **model_args: Any) -> LlamaGenGPT:
    """Load a LlamaGen c2i GPT; `model_args` are LlamaGen ModelArgs fields over its defaults and `preset`.

    E.g. `load_gpt("c2i_L_384.pt", preset="GPT-L", block_size=576)`. Fields that only matter for
    training (dropouts, initializer_range, max_batch_size, ...) are accepted and ignored.
    """
    args = _resolve("GPT", GPT_DEFAULTS, GPT_PRESETS, preset, model_args)
    cfg = gpt_config(args)
    return LlamaGenGPT(cfg, gpt_params_from_state_dict(read_state_dict(path), args, cfg), args)


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


def save_workdirs(gen: LlamaGenGPT | None, vq: LlamaGenVQ, workdir: str | os.PathLike,
                  image_size: int | None = None) -> Any:
    """Save converted models as ar_jax workdirs (`workdir` for the GPT, `workdir/tokenizer` for the VQ), so that
    `ar_jax.load(workdir)` and `sample.py --workdir` need no conversion; see `llamagen_workdir.save_workdirs`."""
    from ar_jax.convert import llamagen_workdir

    return llamagen_workdir.save_workdirs(gen, vq, workdir, image_size)


if __name__ == "__main__":  # python -m ar_jax.convert.llamagen --gpt P --vq P --preset GPT-B --out W
    from ar_jax.convert import llamagen_workdir

    llamagen_workdir.main()
