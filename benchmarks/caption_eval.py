"""Image-to-text on the captioned scenes, and what training both directions costs text-to-image.

    python benchmarks/caption_eval.py --workdir runs/scenes_any [--t2i_workdir runs/scenes_t2i] [--seed 0]

On the run's scenes test split (every colour-shape pair, held-out ones included):
- caption accuracy: the share of images whose greedy caption (`pipe.caption`) describes exactly the scene (parsed
  into objects, colours, counts and relation, and checked against the generator's object metadata: every object
  named and no other, a relation stated from either object and holding in the image, whichever relation the
  scene's own caption chose: `ar_jax/evaluation/captions.py`), per kind of scene, over scenes with and without a
  held-out pair, and overall;
- ranking accuracy: the share of images whose own caption has the highest `pipe.caption_logprob` among itself and
  `--distractors` captions of the same kind that do not describe the scene (zero-shot recognition by likelihood);
- text-to-image: `benchmarks/scene_eval.py`'s score (`ar_jax.evaluation.scenes.evaluate`, the run's sampling
  settings) of this run and, with `--t2i_workdir`, of a text-to-image-only run beside it, and their difference.
Prints tables, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

import ar_jax
from ar_jax.data.scenes import KINDS, SceneObjects, generate
from ar_jax.decode import captioning
from ar_jax.evaluation import captions as cap
from ar_jax.evaluation import scenes as ev


def test_split(pipe) -> tuple[np.ndarray, list[str], SceneObjects, tuple[str, ...]]:
    """The run's scenes test split (images, captions, object metadata) and held-out pairs, drawn as
    `ar_jax.data.scenes.scenes_dataset` draws it (the first child stream of `SeedSequence(seed)`)."""
    d = pipe.config.data
    if d.name != "scenes":
        raise ValueError(f"{d.name!r} is not the scenes dataset; caption_eval judges scenes runs "
                         "(configs/scenes_any.py).")
    test_seed = np.random.SeedSequence(int(d.seed)).spawn(2)[0]
    images, captions, objects = generate(int(d.num_test), test_seed, int(d.image_size), held_out=(),
                                         kind_weights=tuple(d.kind_weights))
    return images, captions, objects, tuple(d.held_out)


def in_batches(fn, n: int, batch_size: int) -> list:
    """`fn(index array)` over `range(n)` in batches of exactly `batch_size` (the last padded: one compilation)."""
    bs = min(batch_size, n)
    out = []
    for start in range(0, n, bs):
        idx = np.arange(start, min(start + bs, n))
        padded = np.concatenate([idx, np.full(bs - len(idx), idx[0])])
        out += list(fn(padded))[: len(idx)]
    return out


def fmt(x: float) -> str:
    return "   -  " if x is None or math.isnan(x) else f"{x:6.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/scenes_any", help="a scenes run trained both ways")
    parser.add_argument("--t2i_workdir", default=None, help="a text-to-image-only run to compare (scene_eval)")
    parser.add_argument("--distractors", type=int, default=9, help="candidate captions besides the true one")
    parser.add_argument("--batch_size", type=int, default=250, help="images per compiled captioning call")
    parser.add_argument("--samples_per_prompt", type=int, default=4, help="text-to-image: as scene_eval.py")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip_t2i", action="store_true", help="captions and ranking only")
    args = parser.parse_args()

    pipe = ar_jax.load(args.workdir)
    images, truths, objects, held_out = test_split(pipe)
    print(f"{len(images)} test scenes of {args.workdir}; held-out pairs {list(held_out)}")

    t0 = time.perf_counter()
    predicted = in_batches(lambda idx: pipe.caption(images[idx]), len(images), args.batch_size)
    accuracy = cap.caption_accuracy(predicted, objects, truths, held_out)
    t_caption = time.perf_counter() - t0

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    candidates = [[t, *cap.distractors(t, objects, i, args.distractors, rng)] for i, t in enumerate(truths)]
    k = 1 + args.distractors
    # pipe.caption_logprob(np.repeat(images, k, 0), candidates), with each image tokenized once, not k times
    tokens = np.repeat(pipe.image_tokens(images), k, axis=0)
    text_len = pipe.model_config.text_len
    text = pipe.text_tokenizer.pad_caption(
        pipe.text_tokenizer.check_length([c for row in candidates for c in row], text_len), text_len)
    logp = captioning.caption_logprob(pipe.params, pipe.model_config, tokens, text).reshape(len(images), k)
    ranking = cap.score(logp.argmax(1) == 0, truths, held_out)
    t_rank = time.perf_counter() - t0

    print(f"\ncaptions ({t_caption:.1f} s) and ranking among {k} ({t_rank:.1f} s); share of test scenes")
    print(f"{'kind':10s} {'caption':>8s} {'held':>6s} {'rank':>6s} {'held':>6s} {'scenes':>7s}")
    for kind in KINDS:
        n = accuracy.counts.get(kind, 0) + accuracy.held_out_counts.get(kind, 0)
        print(f"{kind:10s} {fmt(accuracy.accuracy.get(kind, math.nan)):>8s} "
              f"{fmt(accuracy.held_out_accuracy.get(kind, math.nan))} {fmt(ranking.accuracy.get(kind, math.nan))} "
              f"{fmt(ranking.held_out_accuracy.get(kind, math.nan))} {n:7d}")
    print(f"{'overall':10s} {fmt(accuracy.overall):>8s} {fmt(accuracy.overall_held_out)} {fmt(ranking.overall)} "
          f"{fmt(ranking.overall_held_out)} {len(images):7d}")
    wrong = [(t, p) for i, (t, p) in enumerate(zip(truths, predicted)) if not cap.describes(p, objects, i)]
    for t, p in wrong[:8]:
        print(f"  wrong: {p!r} for {t!r}")

    t2i = {}
    if not args.skip_t2i:
        runs = {"both ways": pipe}
        if args.t2i_workdir:
            runs["text-to-image only"] = ar_jax.load(args.t2i_workdir)
        scores = {}
        for name, p in runs.items():
            t0 = time.perf_counter()
            scores[name] = ev.evaluate(lambda prompts, seed, p=p: p.sample(prompts=prompts, seed=seed),
                                       held_out, args.samples_per_prompt, 64, args.seed)
            print(f"text-to-image, {name}: sampled and judged in {time.perf_counter() - t0:.1f} s")
        print(f"\n{'scene_eval task':18s}" + "".join(f" {n:>20s}" for n in scores))
        for task in (*ev.TASKS, "overall", "held_out_overall"):
            row = f"{task:18s}"
            for s in scores.values():
                value = s.overall if task == "overall" else s.held_out_overall if task == "held_out_overall" \
                    else s.accuracy.get(task, math.nan)
                row += f" {fmt(value):>20s}"
            print(row)
        t2i = {"t2i_overall": round(scores["both ways"].overall, 4),
               "t2i": scores["both ways"].as_json()}
        if "text-to-image only" in scores:
            base = scores["text-to-image only"].overall
            t2i.update(t2i_only_overall=round(base, 4), t2i_only_workdir=args.t2i_workdir,
                       t2i_difference=round(scores["both ways"].overall - base, 4))
            print(f"\nboth ways minus text-to-image only, overall: {t2i['t2i_difference']:+.3f}")

    print(json.dumps({"caption_accuracy": round(accuracy.overall, 4), "caption": accuracy.as_json(),
                      "ranking_accuracy": round(ranking.overall, 4), "ranking": ranking.as_json(),
                      "candidates": k, **t2i, "workdir": args.workdir, "test_scenes": len(images),
                      "held_out_pairs": list(held_out)}))


if __name__ == "__main__":
    main()
