"""Converted LlamaGen models saved as ar_jax workdirs, so `ar_jax.load(W)` and `sample.py --workdir W` need no
conversion next time.

    python -m ar_jax.convert.llamagen --gpt c2i_B_256.pt --vq vq_ds16_c2i.pt --preset GPT-B --out W

    python -m ar_jax.convert.llamagen --gpt t2i_XL_stage1_256.pt --vq vq_ds16_t2i.pt --preset GPT-XL \
        --gpt_args '{"model_type": "t2i"}' --out W

writes `W/tokenizer/` (a VQ tokenizer workdir, as `configs/*_vq.py` runs write) and `W/` (an AR workdir whose
`config.tokenizer` points at it, with LlamaGen's sampling defaults: CFG 4.0, top-k 2000 for c2i; CFG 7.5, top-k 1000
for t2i, whose condition is caption features: `config.model.condition = "caption"`, sampled with
`pipe.sample(cond={"features": ..., "mask": ...})` or `sample.py --caption_embeddings`). Each holds a complete
`config.json` and the converted parameters in an orbax checkpoint at step 0. The AR config names the tokenizer
by its absolute path (`config.tokenizer.workdir`): after moving W, edit that entry or convert again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import ml_collections

from ar_jax import builders
from ar_jax.config import save_config
from ar_jax.convert import llamagen
from ar_jax.training.checkpoints import Checkpointer

TOKENIZER_DIR = "tokenizer"  # the VQ workdir inside the AR workdir
# Fields of the transformer that change its computation: a saved config must rebuild them exactly.
COMPUTE_FIELDS = ("vocab_size", "seq_len", "num_classes", "dim", "num_layers", "num_heads", "kv_heads", "hidden_dim",
                  "rope", "rope_base", "norm_eps", "cls_token_num", "null_class", "causal", "condition", "caption_dim")


def _data(image_size: int, num_classes: int, captions: bool = False) -> dict[str, Any]:
    """What LlamaGen trained on, as far as a config can say: ImageNet (c2i); captioned images (t2i, whose T5 features
    ar_jax does not compute, so such a workdir samples but does not train)."""
    source = {"name": "caption_folder"} if captions else {"name": "tfds", "tfds_name": "imagenet2012"}
    return {**source, "image_shape": (image_size, image_size, 3), "num_classes": num_classes}


def vq_workdir_config(vq: llamagen.LlamaGenVQ, image_size: int, num_classes: int = 1000) -> ml_collections.ConfigDict:
    """The config of a tokenizer workdir holding `vq` for `image_size` x `image_size` RGB images."""
    if image_size % vq.cfg.downsample:
        raise ValueError(f"image_size={image_size} is not a multiple of the VQ's downsampling {vq.cfg.downsample}; "
                         f"pass a multiple of it.")
    return ml_collections.ConfigDict({"kind": "vq", "seed": 0, "data": _data(image_size, num_classes),
                                      "model": dataclasses.asdict(vq.cfg)})


def gpt_workdir_config(gen: llamagen.LlamaGenGPT | llamagen.LlamaGenT2I, vq_cfg: Any,
                       tokenizer_workdir: str | Path) -> ml_collections.ConfigDict:
    """The config of an AR workdir holding `gen` over the codes of the tokenizer in `tokenizer_workdir`.

    Refuses (ValueError) a GPT whose vocabulary differs from the VQ's codebook, a non-square token grid, or a
    model the config cannot rebuild exactly.
    """
    cfg, args = gen.cfg, gen.model_args
    if cfg.vocab_size != vq_cfg.codebook_size:
        raise ValueError(f"the GPT's vocab_size={cfg.vocab_size} differs from the VQ's codebook_size="
                         f"{vq_cfg.codebook_size}: pass the VQ this GPT was trained on.")
    side = math.isqrt(cfg.seq_len)
    if side * side != cfg.seq_len:
        raise ValueError(f"block_size={cfg.seq_len} is not a square grid of codes; pass the block_size the GPT "
                         "was trained with (256 for 256 px, 576 for 384 px).")
    t2i = cfg.condition == "caption"
    sampling = ({"cfg_scale": 7.5, "top_k": min(1000, cfg.vocab_size)} if t2i else  # sample_t2i.py's defaults
                {"cfg_scale": 4.0, "top_k": min(2000, cfg.vocab_size)})  # sample_c2i.py's
    caption = {"condition": "caption", "caption_dim": cfg.caption_dim} if t2i else {}
    c = ml_collections.ConfigDict({
        "kind": "ar", "seed": 0, "data": _data(side * vq_cfg.downsample, cfg.num_classes, t2i),
        "tokenizer": {"kind": "vq", "workdir": str(Path(tokenizer_workdir).absolute()),
                      "codebook_size": vq_cfg.codebook_size, "grid": (side, side)},
        "model": {"family": "transformer", "dim": cfg.dim, "num_layers": cfg.num_layers, "num_heads": cfg.num_heads,
                  "num_kv_heads": cfg.kv_heads, "mlp_dim": cfg.hidden_dim, "rope": cfg.rope,
                  "rope_base": cfg.rope_base, "cls_token_num": cfg.cls_token_num,
                  "token_dropout": float(args["token_dropout_p"]), "resid_dropout": float(args["resid_dropout_p"]),
                  "ffn_dropout": float(args["ffn_dropout_p"]), "dtype": "float32", **caption},
        "label_dropout": float(args["class_dropout_prob"]), "ema_decay": 0.0, "samples_per_class": 4,
        "sampling": {"temperature": 1.0, "top_p": 1.0, "greedy": False, **sampling},
        "mesh": {"data": -1, "fsdp": 1, "tensor": 1}})
    codes = argparse.Namespace(vocab_size=vq_cfg.codebook_size, seq_len=cfg.seq_len)
    built = builders.make_model_config(c, codes)
    diff = {f: (getattr(cfg, f), getattr(built, f)) for f in COMPUTE_FIELDS if getattr(cfg, f) != getattr(built, f)}
    if diff:
        fields = ", ".join(f"{k}={a!r} (the config would build {b!r})" for k, (a, b) in diff.items())
        raise ValueError(f"an ar_jax config cannot express this GPT: {fields}. Use the converted model directly "
                         "(load_gpt).")
    c.lock()
    return c


def _write(workdir: Path, config: ml_collections.ConfigDict, params: Any) -> None:
    if (workdir / "config.json").exists() or (workdir / "checkpoints").exists():
        raise ValueError(f"{workdir} already holds a workdir; pass a new --out (or delete it) so that no "
                         "checkpoint of another model is kept.")
    workdir.mkdir(parents=True, exist_ok=True)
    save_config(config, workdir)
    ckpt = Checkpointer(workdir, keep=1)
    ckpt.save(0, {"params": params})
    ckpt.close()


def save_workdirs(gen: llamagen.LlamaGenGPT | llamagen.LlamaGenT2I | None, vq: llamagen.LlamaGenVQ, workdir: str | Path,
                  image_size: int | None = None) -> Path:
    """Save `vq` as the tokenizer workdir `workdir/tokenizer` and, given `gen`, `gen` as the AR workdir `workdir`.

    `image_size` defaults to the GPT's token grid times the VQ's downsampling (256 for GPT-B with VQ-16), or 256
    without a GPT. Returns the workdir to pass to `ar_jax.load` (the AR one, or the tokenizer one without a GPT).
    Everything is checked before anything is written.
    """
    workdir = Path(workdir)
    tok_dir = workdir / TOKENIZER_DIR
    if gen is not None:
        gpt_config = gpt_workdir_config(gen, vq.cfg, tok_dir)
        image_size = image_size or gpt_config.data.image_shape[0]
        if image_size != gpt_config.data.image_shape[0]:
            raise ValueError(f"image_size={image_size} but the GPT's {gpt_config.tokenizer.grid} codes decode to "
                             f"{gpt_config.data.image_shape[0]} px; leave image_size out.")
    vq_config = vq_workdir_config(vq, image_size or 256, gen.cfg.num_classes if gen is not None else 1000)
    if gen is not None:
        _write(workdir, gpt_config, gen.params)
    _write(tok_dir, vq_config, vq.params)
    return workdir if gen is not None else tok_dir


def main(argv: list[str] | None = None) -> None:
    """`python -m ar_jax.convert.llamagen --gpt P --vq P --preset GPT-B --out W`."""
    parser = argparse.ArgumentParser(description="Convert LlamaGen checkpoints into ar_jax workdirs.")
    parser.add_argument("--gpt", default=None, help="a LlamaGen GPT checkpoint (.pt or .safetensors); a t2i one "
                        "with --gpt_args '{\"model_type\": \"t2i\"}'")
    parser.add_argument("--vq", required=True, help="its VQ tokenizer checkpoint")
    parser.add_argument("--preset", default="GPT-B", help="GPT-B, GPT-L, GPT-XL, ...")
    parser.add_argument("--vq_preset", default="VQ-16", help="VQ-16 or VQ-8")
    parser.add_argument("--gpt_args", default="{}", help='JSON of LlamaGen ModelArgs, e.g. \'{"block_size": 576}\'')
    parser.add_argument("--vq_args", default="{}", help="JSON of LlamaGen VQ ModelArgs")
    parser.add_argument("--image_size", type=int, default=None, help="without --gpt: the tokenizer's image size")
    parser.add_argument("--out", required=True, help="the AR workdir to write (the tokenizer goes to OUT/tokenizer)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        vq = llamagen.load_vq(args.vq, preset=args.vq_preset, **json.loads(args.vq_args))
        gen = llamagen.load_gpt(args.gpt, preset=args.preset, **json.loads(args.gpt_args)) if args.gpt else None
        out = save_workdirs(gen, vq, args.out, args.image_size)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    feats = " --caption_embeddings feats.npz" if gen is not None and gen.cfg.condition == "caption" else ""
    print(f"wrote {out}: ar_jax.load({str(out)!r})" + (f"; python sample.py --workdir {out}{feats} --out grid.png"
                                                     if gen is not None else ""))
