"""Metrics for people and scripts: `workdir/metrics.jsonl` (one JSON object a line) and TensorBoard events
in `workdir/tensorboard/` (scalars, and sample grids as images).

Not clu's metric writers: their TensorBoard writer needs TensorFlow (or PyTorch), and a resumed run here must drop
what was logged past the restored step from both files, which they do not do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricWriter:
    """Appends `{"step": ..., **metrics}` lines and TensorBoard scalars; on resume, what was logged past the
    restored step is dropped from both (TensorBoard by its purge_step)."""

    def __init__(self, workdir: str | Path, resume_step: int):
        from tensorboardX import SummaryWriter

        self.tb_dir = Path(workdir) / TENSORBOARD_DIR
        self.tb = SummaryWriter(str(self.tb_dir), purge_step=resume_step + 1 if resume_step else None,
                                flush_secs=10)
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
        for k, v in metrics.items():
            self.tb.add_scalar(k, float(v), step)

    def write_image(self, step: int, name: str, image: np.ndarray) -> None:
        """A uint8 `[H, W, C]` picture (e.g. a sample grid) as a TensorBoard image."""
        self.tb.add_image(name, image, step, dataformats="HWC")

    def close(self) -> None:
        self.tb.close()


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
