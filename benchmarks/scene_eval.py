"""GenEval-style evaluation of a text-to-image run on the captioned scenes: task accuracies judged from pixels.

    python benchmarks/scene_eval.py --workdir runs/scenes [--cfg_scales 1,2,3] [--samples_per_prompt 4] [--seed 0]
    python benchmarks/scene_eval.py --calibration_only [--image_size 32]

The prompt list (`ar_jax.evaluation.scenes.scene_prompts`: every colour-shape pair alone, counted two and three
times, 32 fixed relation prompts, and the run's held-out pairs apart) is sampled `samples_per_prompt` times with
`pipe.sample(prompts=..., seed=..., cfg_scale=...)`, once per cfg scale, and each image is judged by the pixel judge
(`ar_jax/evaluation/scenes.py`). Columns: accuracy on prompts without a held-out pair ("seen") and with one
("held"). Calibration columns: the scene generator's own renderings of the prompts judged against their captions
(about 1) and against shuffled captions (about 0), and (with a run) those renderings through the run's VQ tokenizer
and back ("tokenizer": the most the prior could score). Overall is the mean of the task accuracies.
Prints a table, then one JSON line: the best cfg scale's scores, every scale's under "sweep", and the
calibration (with --calibration_only the generator's row is the result).
"""

from __future__ import annotations

import argparse
import json
import math
import time

from ar_jax.data.scenes import DEFAULT_HELD_OUT, SIZE, render
from ar_jax.evaluation import scenes as ev


def run_config_value(pipe, key: str, default):
    """`pipe.config.data.<key>` when the run is a scenes run, else `default`."""
    data = pipe.config.data
    return data[key] if data.get("name") == "scenes" and key in data else default


def fmt(x: float) -> str:
    return "   -  " if math.isnan(x) else f"{x:6.3f}"


def print_table(columns: dict[str, ev.SceneScores]) -> None:
    """One row per task then overall; per column, accuracy on seen prompts and on held-out ones."""
    print(f"{'task':18s}" + "".join(f" {name:>14s}" for name in columns))
    print(f"{'':18s}" + "".join(f" {'seen':>6s}  {'held':>6s}" for _ in columns))
    for task in (*ev.TASKS, "overall"):
        row = f"{task:18s}"
        for s in columns.values():
            seen = s.overall if task == "overall" else s.accuracy.get(task, math.nan)
            held = s.held_out_overall if task == "overall" else s.held_out_accuracy.get(task, math.nan)
            row += f" {fmt(seen)}  {fmt(held)}"
        print(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/scenes")
    parser.add_argument("--cfg_scales", default=None, help="comma list, e.g. 1,2,3; default: the run's cfg_scale")
    parser.add_argument("--temperature", type=float, default=None, help="default: the run's")
    parser.add_argument("--top_k", type=int, default=None, help="default: the run's")
    parser.add_argument("--samples_per_prompt", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--held_out", default=None, help="comma list of 'color shape'; default: the run's")
    parser.add_argument("--image_size", type=int, default=None, help="calibration images; default: the run's")
    parser.add_argument("--calibration_only", action="store_true", help="no model: just the calibration columns")
    args = parser.parse_args()

    pipe = None
    if not args.calibration_only:
        import ar_jax

        pipe = ar_jax.load(args.workdir)
    held_out = (tuple(h.strip() for h in args.held_out.split(",") if h.strip()) if args.held_out is not None
                else tuple(run_config_value(pipe, "held_out", DEFAULT_HELD_OUT)) if pipe else DEFAULT_HELD_OUT)
    size = args.image_size or (int(run_config_value(pipe, "image_size", SIZE)) if pipe else SIZE)
    seen, held = ev.scene_prompts(held_out)
    print(f"scene prompts: {len(seen)} seen + {len(held)} with a held-out pair {list(held_out)}, "
          f"{args.samples_per_prompt} samples each")

    calibration = ev.calibration(held_out, args.samples_per_prompt, size, args.seed)
    columns, sweep = {}, []
    if pipe is not None:  # the ceiling the tokenizer leaves: the generator's scenes through the run's VQ
        roundtrip = lambda prompts, seed: pipe.tokenizer.decode(pipe.tokenizer.encode(render(prompts, seed, size)[0]))
        calibration["tokenizer"] = ev.evaluate(roundtrip, held_out, args.samples_per_prompt, args.batch_size,
                                               args.seed)
    if pipe is not None:
        sampling = {k: v for k, v in (("temperature", args.temperature), ("top_k", args.top_k)) if v is not None}
        scales = [float(s) for s in args.cfg_scales.split(",")] if args.cfg_scales else [None]
        for scale in scales:
            kw = dict(sampling, **({} if scale is None else {"cfg_scale": scale}))
            t0 = time.perf_counter()
            scores = ev.evaluate(lambda prompts, seed, kw=kw: pipe.sample(prompts=prompts, seed=seed, **kw),
                                 held_out, args.samples_per_prompt, args.batch_size, args.seed)
            label = "run default" if scale is None else f"cfg {scale:g}"
            print(f"{label}: sampled and judged in {time.perf_counter() - t0:.1f} s")
            columns[label] = scores
            sweep.append({"cfg_scale": scale, **scores.as_json()})
    columns.update({name: calibration[name] for name in ("tokenizer", "generator", "shuffled") if name in calibration})
    print_table(columns)

    calib = {name: s.as_json() for name, s in calibration.items()}
    if sweep:
        best = max(sweep, key=lambda r: -1.0 if r["overall"] is None else r["overall"])
        result = {**best, "workdir": args.workdir, "sweep": sweep}
    else:
        result = {**calib["generator"], "scored": "scene generator (calibration only)"}
    print(json.dumps({**result, "calibration": {f"{name}_overall": c["overall"] for name, c in calib.items()},
                      "held_out_pairs": list(held_out), "samples_per_prompt": args.samples_per_prompt,
                      "image_size": size}))


if __name__ == "__main__":
    main()
