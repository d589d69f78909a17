"""Generation speed against quality: plain AR, speculative decoding, Medusa and MaskGIT on the scenes text-to-image
run, the digits and the shapes codes, and what each method's forward pass costs on a GPT-B-shaped model.

Train every run it reads (each command resumes if run again; a run that is missing leaves its method out):

    python train.py --config configs/scenes_vq.py --workdir runs/scenes_vq
    python train.py --config configs/scenes_t2i.py --workdir runs/scenes_t2i
    python train.py --config configs/scenes_draft.py --workdir runs/scenes_draft
    python train.py --config configs/scenes_maskgit.py --workdir runs/scenes_maskgit
    python train.py --config configs/scenes_t2i_medusa.py --workdir runs/scenes_t2i_medusa
    python train.py --config configs/digits_pixels.py --workdir runs/digits
    python train.py --config configs/digits_draft.py --workdir runs/digits_draft
    python train.py --config configs/digits_maskgit.py --workdir runs/digits_maskgit
    python train.py --config configs/scenes_t2i_medusa.py --workdir runs/digits_medusa --config.base_workdir=runs/digits
    (shapes: configs/shapes_vq.py, shapes_ar.py, shapes_draft.py, shapes_maskgit.py, and the Medusa heads of
    runs/shapes_ar into runs/shapes_medusa, as for the digits)

then

    python benchmarks/generation_speed.py [--datasets scenes,digits,shapes] [--batches 1,32] [--repeats 3] [--k 4]

Speed: tokens/s of token generation only (the VQ decoder's pixels are not timed), each the median of --repeats timed
calls after one warm-up call. Every method uses the run's `config.sampling` (speculative decoding and Medusa sample
exactly the target's distribution). Speculative: acceptance = accepted / proposed drafts (each row advances by its own
accepted length). Medusa: acceptance of the heads' proposals and tokens per forward pass (the prefill counted). The
timed calls repeat one batch of conditions, so below the largest batch acceptance is counted over the largest batch's
conditions a batch at a time: every batch size on the same prompts or labels. Quality beside each:
`benchmarks/scene_eval.py`'s overall for the scenes (--samples_per_prompt each), class-consistency of --per_class
samples per class for the digits (SVC judge) and shapes (shape classifier), drawn at the largest batch.
Pass costs: milliseconds of one forward pass of each method's kind (plain: 1 token; verification: k + 1 or heads
+ 1 tokens at per-row positions; the heads; a draft token; MaskGIT: every image token) in a compiled loop (8 a call),
for the primary dataset's own run, draft and heads (its rows doubled by CFG, as decoding runs them) and for a random
GPT-B-shaped model (--gpt_b: 256 tokens, vocabulary 16384, a GPT-B/4 draft), each with the speed-up over plain that
these costs and the measured tokens per pass give (`tokens per pass x plain pass / method pass`; MaskGIT: `tokens
plain passes / steps full passes`): on the own run it explains the measured speed, on GPT-B it projects it.
--cpu_cores (default 1; all; a number) is applied before anything runs (`ar_jax.backends.choose_cpu_cores`): these
small runs decode several times faster on one core of this 2-core machine than on both. Prints a table, then one JSON
line: the primary row (the first dataset at the first batch) at the top level, `speculative_acceptance_b32` from the
same dataset at batch 32, every figure under `results`.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from digits_quality import digit_classifier
from speed import timed

import ar_jax
from ar_jax import backends
from ar_jax.data.shapes import classify, shape_classifier
from ar_jax.data.sources import get_dataset
from ar_jax.decode import medusa, speculative
from ar_jax.decode import processors as proc
from ar_jax.evaluation import scenes as scene_ev
from ar_jax.models import medusa as medusa_heads
from ar_jax.models.transformer import Transformer, TransformerConfig, init_cache, prepare

EXACT_SETTINGS = ("temperature", "top_k", "top_p", "min_p", "typical_p", "greedy", "cfg_scale")
RUNS = {"scenes": ("scenes_t2i", "scenes_draft", "scenes_maskgit", "scenes_t2i_medusa"),
        "digits": ("digits", "digits_draft", "digits_maskgit", "digits_medusa"),
        "shapes": ("shapes_ar", "shapes_draft", "shapes_maskgit", "shapes_medusa")}
ROLES = ("ar", "draft", "maskgit", "medusa")


def methods(pipes: dict, k: int, medusa_k: int = 0) -> dict:
    """name -> `fn(what, seed) -> (tokens [B, T], stats or None)`, `what` labels `[B]` or prompts (a list)."""
    target = pipes["ar"]
    cond = lambda pipe, what: pipe.condition(prompts=what) if isinstance(what, list) else pipe.condition(what)
    exact = {key: v for key, v in target.config.sampling.to_dict().items() if key in EXACT_SETTINGS}
    ready = lambda toks, stats: (jax.block_until_ready(toks), {key: int(v) for key, v in stats.items()})
    fns = {"plain": lambda what, seed: (jax.block_until_ready(
        target.sample_tokens(cond=cond(target, what), seed=seed, method="plain")), None)}
    if "draft" in pipes:
        (cfg, params), (dcfg, dparams) = target.for_decoding(), pipes["draft"].for_decoding()
        fns["speculative"] = lambda what, seed: ready(*speculative.generate(
            params, cfg, dparams, dcfg, cond(target, what), jax.random.key(seed), k=k, **exact))
    if "medusa" in pipes:
        med = pipes["medusa"]
        mcfg, mparams = med.for_decoding()
        heads = {key: v[:medusa_k or None] for key, v in med.medusa.items()}  # the first medusa_k heads (0: all)
        fns["medusa"] = lambda what, seed: ready(*medusa.generate(mparams, mcfg, heads, cond(med, what),
                                                                  jax.random.key(seed), **exact))
    if "maskgit" in pipes:
        mg = pipes["maskgit"]
        fns["maskgit"] = lambda what, seed: (jax.block_until_ready(mg.sample_tokens(cond=cond(mg, what), seed=seed)),
                                             None)
    return fns


def quality(name: str, pipes: dict, fns: dict, batch: int, per_class: int, samples_per_prompt: int) -> dict:
    """method -> scene_eval overall (scenes) or class-consistency (digits, shapes) of its samples."""
    target = pipes["ar"]
    if name == "scenes":
        held_out = tuple(target.config.data.get("held_out", scene_ev.DEFAULT_HELD_OUT))
        return {m: scene_ev.evaluate(lambda prompts, seed, fn=fn: target.tokenizer.decode(np.asarray(
            fn(list(prompts), seed)[0])), held_out, samples_per_prompt, batch).overall for m, fn in fns.items()}
    data = get_dataset(target.config.data)
    if name == "digits":
        judge, decode = digit_classifier(target.tokenizer, data).predict, lambda toks: toks  # reads pixel tokens
    else:
        clf = shape_classifier(data)
        judge, decode = (lambda images: classify(clf, images)), target.tokenizer.decode
    labels = np.repeat(np.arange(max(data.num_classes, 1), dtype=np.int32), per_class)
    out = {}
    for m, fn in fns.items():
        toks = []
        for i, start in enumerate(range(0, len(labels), batch)):
            chunk = labels[start:start + batch]
            padded = np.concatenate([chunk, np.repeat(chunk[:1], batch - len(chunk))])
            toks.append(np.asarray(fn(padded, 1000 + i)[0])[: len(chunk)])
        out[m] = float((judge(decode(np.concatenate(toks))) == labels).mean())
    return out


def what_to_sample(pipe, batch: int) -> object:
    """A batch's labels (classes in turn) or prompts (the scene evaluation's, in turn)."""
    if pipe.model_config.condition == "text":
        seen, held = scene_ev.scene_prompts()
        prompts = seen + held
        return [prompts[i % len(prompts)] for i in range(batch)]
    return np.arange(batch, dtype=np.int32) % max(pipe.config.data.num_classes, 1)


def timed_calls(fn, what, repeats: int) -> tuple[float, float, list]:
    """`timed` over `fn(what, seed)` with a new seed each call; also the stats of every call (warm-up first)."""
    stats, seeds = [], iter(range(10_000))
    med, compile_s = timed(lambda: stats.append(fn(what, next(seeds))[1]), repeats)
    return med, compile_s, stats


def seconds_per_call(fn, args: tuple, repeats: int, carry: bool = False) -> float:
    """Median seconds of `fn(*args)`; with `carry` the first argument is replaced by the first output each call (a
    donated cache)."""
    box = list(args)

    def call():
        out = jax.block_until_ready(fn(*box))
        if carry:
            box[0] = out[0]
    return timed(call, repeats)[0]


def bench_dataset(name: str, workdirs: dict, batches: list[int], args: argparse.Namespace) -> dict:
    pipes = {role: ar_jax.load(w) for role, w in workdirs.items() if Path(w, "config.json").is_file()}
    if "ar" not in pipes:
        raise ValueError(f"{workdirs['ar']} holds no trained run: train it first (commands in this script's doc).")
    for role, w in workdirs.items():
        print(f"{name} {role} {w}: {pipes[role].weights if role in pipes else 'not trained, left out'}")
    T = pipes["ar"].model_config.seq_len
    out: dict = {"speed": {}, "seq_len": T, "k": args.k,
                 "steps": int(pipes["maskgit"].config.sampling.steps) if "maskgit" in pipes else None,
                 "medusa_heads": (args.medusa_k or medusa_heads.num_heads(pipes["medusa"].medusa)) if "medusa" in pipes
                 else None}
    fns = methods(pipes, args.k, args.medusa_k)
    for batch in batches:
        what, row = what_to_sample(pipes["ar"], batch), {}
        for method, fn in fns.items():
            med, compile_s, stats = timed_calls(fn, what, args.repeats)
            row[method] = {"tokens_per_s": batch * T / med, "seconds": med, "compile_s": compile_s}
            if stats[0] is not None:
                calls = stats[1:]  # the timed calls
                if batch < max(batches):  # their few conditions again and again: count over the largest batch's
                    every = what_to_sample(pipes["ar"], max(batches))
                    calls = [fn(every[i:i + batch], 100 + i)[1] for i in range(0, len(every) - batch + 1, batch)]
                s = {key: sum(x[key] for x in calls) for key in stats[0]}
                row[method]["acceptance"] = s["accepted"] / max(s["proposed"], 1)
                row[method]["tokens_per_pass"] = (batch * T * len(calls) / (batch * len(calls) + s["row_rounds"])
                                                  if method == "medusa" else
                                                  (s["accepted"] + s["row_rounds"]) / max(s["row_rounds"], 1))
        out["speed"][batch] = row
    out["quality"] = quality(name, pipes, fns, max(batches), args.per_class, args.samples_per_prompt)
    return out


def pass_costs(cfg: TransformerConfig, prepared, dcfg: TransformerConfig, dprepared, hp: dict, batches: list[int],
               k: int, repeats: int, rows_per_image: int = 1, passes: int = 8) -> dict:
    """batch -> seconds of one forward pass of each method's kind for a model (`cfg`, `prepared`), its draft and its
    Medusa heads `hp`: plain (1 token), verify (k + 1 and heads + 1 tokens, per-row start), the heads (on one
    position), the draft (1 token) and MaskGIT (every image token), on `rows_per_image` (2: CFG) rows an image; each
    the median of `repeats` calls of `passes` passes in a compiled loop (a decoding loop's cost, not Python's)."""
    C, T, heads = cfg.prefix_len, cfg.seq_len, medusa_heads.num_heads(hp)

    def step_fn(c, p):
        @functools.partial(jax.jit, donate_argnums=0)
        def run(cache, toks, start):
            def body(i, carry):
                cache, acc = carry
                (logits, hidden), cache = Transformer(c, p.backend).apply({"params": p.params}, toks + i, None,
                                                                          start=start, cache=cache, heads="hidden")
                return cache, acc + logits.sum() + hidden.sum()
            return jax.lax.fori_loop(0, passes, body, (cache, jnp.float32(0)))
        return run

    heads_fn = jax.jit(lambda hp, hidden, prev: jax.lax.fori_loop(
        0, passes, lambda i, acc: acc + medusa_heads.head_logits(hp, hidden + i, prev).sum(), jnp.float32(0)))
    out = {}
    for batch in batches:
        row, B = {}, batch * rows_per_image
        for key, c, p, n in (("plain", cfg, prepared, 1), ("verify_k", cfg, prepared, k + 1),
                             ("verify_heads", cfg, prepared, heads + 1), ("draft", dcfg, dprepared, 1),
                             ("maskgit", cfg, prepared, T)):  # MaskGIT: a pass over every image token
            run, cache = step_fn(c, p), init_cache(c, B, C + T + max(k, heads) + 1)
            toks = jnp.zeros((B, n), jnp.int32)
            at = C if n == T else C + T // 2
            start = jnp.int32(at) if n == 1 else jnp.full((B,), at, jnp.int32)
            row[key] = seconds_per_call(run, (cache, toks, start), repeats, carry=True) / passes
        prev = jnp.zeros((B, heads), jnp.int32) if "embed" in hp else None  # sequential heads read a token each
        row["heads"] = seconds_per_call(heads_fn, (hp, jnp.ones((B, cfg.dim)), prev), repeats) / passes
        out[batch] = row
    return out


def gpt_b_costs(batches: list[int], k: int, heads: int, repeats: int) -> dict:
    """`pass_costs` of a random GPT-B-shaped model (256 tokens, vocabulary 16384), a GPT-B/4 draft and K heads."""
    cfg = TransformerConfig(vocab_size=16384, seq_len=256, num_classes=1000, dim=768, num_layers=12, num_heads=12)
    dcfg = cfg.replace(dim=192, num_layers=6, num_heads=3)
    prepared, dprepared = (prepare(c.init(jax.random.key(0))[0]) for c in (cfg, dcfg))
    hp = medusa_heads.init_heads(cfg, {"output": jnp.full((cfg.dim, cfg.vocab_size), 0.01)}, heads)
    return pass_costs(cfg, prepared, dcfg, dprepared, hp, batches, k, repeats, passes=1)  # passes of ms or more


def own_costs(workdirs: dict, batches: list[int], k: int, repeats: int) -> dict | None:
    """`pass_costs` of a dataset's own trained run, draft and heads (None unless all three are trained)."""
    if not all(Path(workdirs[r], "config.json").is_file() for r in ("ar", "draft", "medusa")):
        return None
    target, draft, med = (ar_jax.load(workdirs[r]) for r in ("ar", "draft", "medusa"))
    (cfg, params), (dcfg, dparams) = target.for_decoding(), draft.for_decoding()
    rows = 2 if proc.uses_guidance(target.config.sampling.cfg_scale) else 1  # CFG: a null row beside each
    return pass_costs(cfg, prepare(params), dcfg, prepare(dparams), med.medusa, batches, k, repeats, rows)


def projected(costs: dict, speed: dict, k: int, steps: int | None, T: int = 256) -> dict:
    """Speed-up over plain decoding from a model's pass costs and the measured tokens per pass."""
    out = {}
    if "medusa" in speed:
        out["medusa"] = speed["medusa"]["tokens_per_pass"] * costs["plain"] / (costs["verify_heads"] + costs["heads"])
    if "speculative" in speed:
        out["speculative"] = speed["speculative"]["tokens_per_pass"] * costs["plain"] / (
            costs["verify_k"] + k * costs["draft"])
    if steps:
        out["maskgit"] = T * costs["plain"] / (steps * costs["maskgit"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="scenes,digits,shapes")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=4, help="drafts per speculative round")
    parser.add_argument("--medusa_k", type=int, default=0, help="Medusa heads to propose with (the first ones; 0: all)")
    parser.add_argument("--per_class", type=int, default=20, help="samples per class for class-consistency")
    parser.add_argument("--samples_per_prompt", type=int, default=16,
                        help="scene_eval samples per prompt (16: 1,280 images, about +-0.01 on the overall score)")
    parser.add_argument("--gpt_b", type=int, default=1, help="1: the GPT-B-shaped cost row; 0: leave it out")
    parser.add_argument("--cpu_cores", default="1",
                        help="CPU cores XLA:CPU runs on (1: these small runs decode fastest on one; all; a number)")
    for name, defaults in RUNS.items():
        for role, default in zip(ROLES, defaults):
            parser.add_argument(f"--{name}_{role}", default=f"runs/{default}")
    args = parser.parse_args()
    used = backends.choose_cpu_cores(args.cpu_cores, None, 1)  # first: XLA:CPU sizes its thread pool once
    datasets = [d for d in args.datasets.split(",") if d]
    if not datasets or set(datasets) - set(RUNS):
        raise ValueError(f"--datasets={args.datasets!r} must list some of {', '.join(RUNS)}.")
    batches = [int(b) for b in args.batches.split(",")]
    if args.repeats < 3 or min(batches) < 1:
        raise ValueError(f"--repeats={args.repeats} must be >= 3 and --batches={args.batches} positive.")

    results = {}
    for name in datasets:
        r = results[name] = bench_dataset(name, {role: getattr(args, f"{name}_{role}") for role in ROLES}, batches,
                                          args)
        judge = "scene_eval overall" if name == "scenes" else "class-consistency"
        print(f"\n{name}: {r['seq_len']} tokens per image, speculative k={r['k']}, Medusa heads={r['medusa_heads']}, "
              f"MaskGIT steps={r['steps']}, medians of {args.repeats} ({jax.devices()[0].platform}, "
              f"{jax.device_count()} device(s), {len(used)} CPU core(s))")
        print(f"{'method':12s} {'batch':>5s} {'tokens/s':>10s} {'accept':>7s} {'tok/pass':>8s} {'compile s':>9s} "
              f"{judge:>18s}")
        for batch in batches:
            for method, s in r["speed"][batch].items():
                acc = f"{s['acceptance']:7.3f} {s['tokens_per_pass']:8.2f}" if "acceptance" in s else f"{'-':>7s} " \
                    f"{'-':>8s}"
                print(f"{method:12s} {batch:5d} {s['tokens_per_s']:10.1f} {acc} {s['compile_s']:9.1f} "
                      f"{r['quality'][method]:18.3f}")
    primary = results[datasets[0]]
    own = own_costs({role: getattr(args, f"{datasets[0]}_{role}") for role in ROLES}, batches, args.k, args.repeats)
    if own:
        print(f"\n{datasets[0]}'s own models: ms per forward pass, and the speed-up over plain that these costs and "
              "the measured tokens per pass give (against the measured one above)")
        for batch in batches:
            c = own[batch]
            up = projected(c, primary["speed"][batch], args.k, primary["steps"], primary["seq_len"])
            print(f"batch {batch:3d}: " + " ".join(f"{key} {1e3 * v:.3f}" for key, v in c.items()) + " | speed-up "
                  + " ".join(f"{key} {v:.2f}x" for key, v in up.items()))
            c["projected_speedup"] = up
        primary["own_costs"] = own
    if args.gpt_b:
        costs = gpt_b_costs(batches, args.k, primary["medusa_heads"] or 4, args.repeats)
        print(f"\nGPT-B shape (random weights, 256 tokens): ms per forward pass, and the speed-up over plain that "
              f"{datasets[0]}'s tokens per pass give")
        for batch in batches:
            c = costs[batch]
            up = projected(c, primary["speed"][batch], args.k, primary["steps"])
            print(f"batch {batch:3d}: " + " ".join(f"{key} {1e3 * v:.2f}" for key, v in c.items()) + " | speed-up "
                  + " ".join(f"{key} {v:.2f}x" for key, v in up.items()))
            c["projected_speedup"] = up
        primary["gpt_b"] = costs
    speed, b0 = primary["speed"][batches[0]], batches[0]
    get = lambda method, key: speed[method][key] if method in speed else None
    b32 = primary["speed"].get(32, {})
    summary = {
        "primary": f"{datasets[0]}, batch {b0}",
        "plain_tokens_per_s": get("plain", "tokens_per_s"),
        "speculative_tokens_per_s": get("speculative", "tokens_per_s"),
        "acceptance_rate": get("speculative", "acceptance"),
        "maskgit_tokens_per_s": get("maskgit", "tokens_per_s"),
        "medusa_tokens_per_s": get("medusa", "tokens_per_s"),
        "medusa_acceptance": get("medusa", "acceptance"),
        "medusa_tokens_per_pass": get("medusa", "tokens_per_pass"),
        "speculative_acceptance_b32": b32["speculative"]["acceptance"] if "speculative" in b32 else None,
        **{f"{m}_quality": q for m, q in primary["quality"].items()},
        "k": args.k, "cpu_cores": len(used), "maskgit_steps": primary["steps"], "medusa_heads": primary["medusa_heads"],
        "results": results,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
