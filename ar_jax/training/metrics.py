"""Metrics for people and scripts: `workdir/metrics.jsonl`, one JSON object a line."""

from __future__ import annotations

import json
from pathlib import Path

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
    """Appends `{"step": ..., **metrics}` lines; on resume, lines past the restored step are dropped."""

    def __init__(self, workdir: str | Path, resume_step: int):
        self.path = Path(workdir) / METRICS_FILE
        if self.path.exists():
            keep = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and _step(ln) is not None and _step(ln) <= resume_step]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(ln + "\n" for ln in keep))
            tmp.replace(self.path)

    def write(self, step: int, **metrics: float) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")


def _step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def read_metrics(workdir: str | Path) -> list[dict]:
    """All complete lines of `metrics.jsonl` (a line torn by a kill is left out)."""
    path = Path(workdir) / METRICS_FILE
    out = []
    for ln in path.read_text().splitlines() if path.exists() else []:
        try:
            out.append(json.loads(ln))
        except ValueError:
            continue
    return out
