"""ar_jax against LlamaGen on this machine, in one sitting: speed.py and llamagen_speed.py alternated, a ratio a round.

    python benchmarks/versus_llamagen.py --llamagen /path/to/LlamaGen --torch-python /path/to/python [--rounds 1]

For each round and each of speed.py's four benchmarks, runs `speed.py --only NAME --json` (this interpreter, with
ar_jax) and `llamagen_speed.py --only NAME --json` (--torch-python, an interpreter with PyTorch; LlamaGen's code
from the --llamagen checkout) back to back, each in its own process and each the median of --repeats after a
warm-up; which goes first alternates from one round to the next. The ratio is LlamaGen's seconds over ours from the
same round, so the machine's drift falls on both sides alike; the table gives each side's median over rounds and
the median ratio, beside speed.py's measure of this machine (read and matmul rate) before and after. Prints the
table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
NAMES = ["generate_b1", "generate_b8", "train_step_b8", "vq_decode_b8"]


def run_json(cmd: list[str]) -> dict:
    """The last JSON line `cmd` prints; its stderr if it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llamagen", required=True, help="a checkout of github.com/FoundationVision/LlamaGen")
    parser.add_argument("--torch-python", default=sys.executable, help="a Python with torch installed")
    parser.add_argument("--only", choices=NAMES, action="append", help="these benchmarks (default: all four)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ours_cmd = [sys.executable, str(HERE / "speed.py"), "--json", "--repeats", str(args.repeats), "--only"]
    theirs_cmd = [args.torch_python, str(HERE / "llamagen_speed.py"), "--llamagen", args.llamagen, "--json",
                  "--repeats", str(args.repeats), "--only"]
    machine = [run_json(ours_cmd + ["machine"])]
    results = {name: {"ours": [], "llamagen": []} for name in args.only or NAMES}
    for r in range(args.rounds):
        for name, res in results.items():
            sides = [("ours", ours_cmd), ("llamagen", theirs_cmd)]
            for side, cmd in sides if r % 2 == 0 else sides[::-1]:
                row = run_json(cmd + [name])
                res[side].append(row)
                print(f"round {r + 1} {name:14s} {side:9s} {row['median_s']:7.2f} s", file=sys.stderr, flush=True)
    machine.append(run_json(ours_cmd + ["machine"]))
    ours_row = results[next(iter(results))]["ours"][0]
    theirs_row = results[next(iter(results))]["llamagen"][0]
    print(f"ar_jax on {ours_row['device']} vs LlamaGen (PyTorch {theirs_row['torch']}, {theirs_row['threads']} "
          f"threads), float32, each the median of {args.repeats} after warm-up, {args.rounds} round(s)")
    print(f"cpu: {machine[0]['cpu']}")
    print("this machine before / after: " + " / ".join(
        f"{m['read_gb_s']:.1f} GB/s, {m['matmul_gflop_s']:.0f} GFLOP/s" for m in machine))
    print(f"{'benchmark':16s} {'ar_jax s':>9s} {'LlamaGen s':>10s} {'ratio':>7s}  ratio each round")
    summary = {}
    for name, res in results.items():
        ours = [row["median_s"] for row in res["ours"]]
        theirs = [row["median_s"] for row in res["llamagen"]]
        ratios = [t / o for t, o in zip(theirs, ours)]
        summary[name] = {"ar_jax_s": statistics.median(ours), "llamagen_s": statistics.median(theirs),
                         "ratio": statistics.median(ratios), "ratios": ratios,
                         "ar_jax_peak_gib": max(row["peak_rss_gib"] for row in res["ours"]),
                         "llamagen_peak_gib": max(row["peak_rss_gib"] for row in res["llamagen"])}
        s = summary[name]
        print(f"{name:16s} {s['ar_jax_s']:9.2f} {s['llamagen_s']:10.2f} {s['ratio']:6.2f}x  "
              + " ".join(f"{x:.2f}" for x in ratios))
    print(json.dumps({"rounds": args.rounds, "repeats": args.repeats, "machine": machine, "results": summary}))


if __name__ == "__main__":
    main()
