"""LlamaGen's own PyTorch code on speed.py's four benchmarks, on this machine: the other side of the comparison.

    pip install torch numpy                    # any environment; torch is not an ar_jax dependency
    git clone https://github.com/FoundationVision/LlamaGen /path/to/LlamaGen   # the README: see its speed section
    python benchmarks/llamagen_speed.py --llamagen /path/to/LlamaGen [--only generate_b1] [--json]

What `../shared/peers/llamagen.md` describes, rerun here so a ratio can be taken on one machine in one sitting
(`benchmarks/versus_llamagen.py` alternates this script with speed.py). LlamaGen's classes are imported from the
checkout, never copied: `GPT_B(vocab_size=16384, num_classes=1000, cls_token_num=1, block_size=256,
model_type="c2i")` random-initialised, float32;
1. `generate(model, labels, 256, cfg_scale=4.0, top_k=2000, temperature=1.0, top_p=1.0)` (its KV cache) in eval
   mode, batch 1 and 8 (labels `7 * i % 1000`, as speed.py);
2. one training step at batch 8 x 256 as its `train_c2i.py` takes it: `model.train()` (its default dropouts),
   `model(cond_idx=labels, idx=tokens[:, :-1], targets=tokens)`, backward, `clip_grad_norm_(1.0)`, and the
   optimizer its `creat_optimizer` builds (fused AdamW, weight decay 0.05 on the >= 2-D weights, betas 0.9 / 0.95);
3. `VQ_16(codebook_size=16384, codebook_embed_dim=8).decode_code(codes, (8, 8, 16, 16))` (16x16 codes ->
   256x256 images) at batch 8.
Each is the median of --repeats timed runs after one warm-up (`compile_s`: the warm-up's extra time), each
benchmark in its own process (peak memory apart), PyTorch's default thread count unless --threads. `--json` prints
speed.py's line format: `{"name": ..., "median_s": ..., ...}`.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys

from timing import each_in_own_process, timed

NAMES = ["generate_b1", "generate_b8", "train_step_b8", "vq_decode_b8"]


def gpt_b():
    import torch
    from autoregressive.models.gpt import GPT_models

    torch.manual_seed(0)
    return GPT_models["GPT-B"](vocab_size=16384, num_classes=1000, cls_token_num=1, block_size=256,
                               model_type="c2i")


def bench_generate(batch: int, repeats: int) -> dict:
    import torch
    from autoregressive.models.generate import generate

    model = gpt_b().eval()
    labels = torch.arange(batch, dtype=torch.long) * 7 % 1000

    def run():
        generate(model, labels, 256, cfg_scale=4.0, top_k=2000, temperature=1.0, top_p=1.0, sample_logits=True)

    med, compile_s = timed(run, repeats)
    return {"median_s": med, "compile_s": compile_s, "tokens_per_s": batch * 256 / med, "images_per_s": batch / med}


def bench_train(batch: int, repeats: int) -> dict:
    import torch

    model = gpt_b().train()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.05},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), fused=True)  # as train_c2i.py's creat_optimizer
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 16384, (batch, 256), generator=g)
    labels = torch.randint(0, 1000, (batch,), generator=g)

    def run():
        _, loss = model(cond_idx=labels, idx=tokens[:, :-1], targets=tokens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    med, compile_s = timed(run, repeats)
    return {"median_s": med, "compile_s": compile_s, "tokens_per_s": batch * 256 / med}


def bench_vq_decode(batch: int, repeats: int) -> dict:
    import torch
    from tokenizer.tokenizer_image.vq_model import VQ_models

    torch.manual_seed(0)
    model = VQ_models["VQ-16"](codebook_size=16384, codebook_embed_dim=8).eval()
    codes = torch.randint(0, 16384, (batch, 16, 16), generator=torch.Generator().manual_seed(0))

    def run():
        with torch.no_grad():
            model.decode_code(codes.reshape(batch, -1), (batch, 8, 16, 16))

    med, compile_s = timed(run, repeats)
    return {"median_s": med, "compile_s": compile_s, "images_per_s": batch / med}


def run_one(name: str, repeats: int, threads: int | None) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    fn = {"generate_b1": lambda: bench_generate(1, repeats), "generate_b8": lambda: bench_generate(8, repeats),
          "train_step_b8": lambda: bench_train(8, repeats), "vq_decode_b8": lambda: bench_vq_decode(8, repeats)}[name]
    out = {"name": name, "repeats": repeats, **fn()}
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["torch"] = torch.__version__
    out["threads"] = torch.get_num_threads()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llamagen", required=True, help="a checkout of github.com/FoundationVision/LlamaGen")
    parser.add_argument("--only", choices=NAMES)
    parser.add_argument("--json", action="store_true", help="one JSON object a line")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    args = parser.parse_args()
    sys.path.insert(0, args.llamagen)
    if args.only:
        rows = [run_one(args.only, args.repeats, args.threads)]
    else:
        rows = each_in_own_process(NAMES, lambda name: [
            sys.executable, __file__, "--llamagen", args.llamagen, "--only", name, "--json", "--repeats",
            str(args.repeats), "--threads", str(args.threads)])
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return
    print(f"LlamaGen (PyTorch {rows[0]['torch'] if rows else '?'}, {rows[0]['threads'] if rows else '?'} threads), "
          f"float32, median of {args.repeats} after warm-up")
    print(f"{'benchmark':16s} {'median s':>9s} {'warm-up s':>9s} {'tokens/s':>9s} {'images/s':>9s} {'peak GiB':>8s}")
    for r in rows:
        print(f"{r['name']:16s} {r['median_s']:9.2f} {r['compile_s']:9.1f} {r.get('tokens_per_s', float('nan')):9.1f} "
              f"{r.get('images_per_s', float('nan')):9.3f} {r['peak_rss_gib']:8.2f}")


if __name__ == "__main__":
    main()
