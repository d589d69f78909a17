"""Caption evaluation on the captioned scenes: whether a caption describes exactly its scene, and ranking candidates.

A caption is parsed into its structure (`ar_jax.data.scenes.parse_caption`: kind, objects with colour and shape, a
count, a relation) and compared with the scene's own caption: the same kind, objects and count, and the same
relation stated from either object ("a red circle left of a blue square" is "a blue square right of a red circle").
Text that is not a scenes caption describes no scene. `distractors` draws candidate captions of the same kind that
describe other scenes, for ranking by `pipe.caption_logprob` (zero-shot recognition, as ImageGPT's probes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from ar_jax.data.scenes import DEFAULT_HELD_OUT, KINDS, Caption, all_captions, parse_caption
from ar_jax.evaluation.scenes import names_held_out

INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def scene_of(caption: str | Caption) -> tuple | None:
    """A hashable description of the scene a caption states (one per scene, whichever object a relation starts
    from), or None for text that is not a scenes caption."""
    if not isinstance(caption, Caption):
        try:
            caption = parse_caption(caption)
        except ValueError:
            return None
    if caption.kind != "relation":
        return caption.kind, caption.objects, None
    (a, b), rel = caption.objects, caption.relation
    return min(("relation", (a, b), rel), ("relation", (b, a), INVERSE[rel]))


def same_scene(predicted: str | Caption, truth: str | Caption) -> bool:
    """Whether `predicted` describes exactly the scene `truth` does (False for text that is not a scenes caption)."""
    mine = scene_of(predicted)
    return mine is not None and mine == scene_of(truth)


@dataclasses.dataclass(frozen=True)
class CaptionScores:
    """Shares of correct captions per caption kind, over scenes without (`accuracy`) and with (`held_out_accuracy`)
    a held-out colour-shape pair; `overall` is the share over all of them."""

    accuracy: dict[str, float]
    held_out_accuracy: dict[str, float]
    counts: dict[str, int]
    held_out_counts: dict[str, int]
    overall: float
    overall_seen: float
    overall_held_out: float

    def as_json(self) -> dict[str, object]:
        clean = lambda x: None if math.isnan(x) else round(x, 4)
        return {"overall": clean(self.overall), "seen": clean(self.overall_seen),
                "held_out": clean(self.overall_held_out), **{k: clean(v) for k, v in self.accuracy.items()},
                "held_out_by_kind": {k: clean(v) for k, v in self.held_out_accuracy.items()}}


def score(correct: Sequence[bool], truths: Sequence[str], held_out: Sequence[str] = DEFAULT_HELD_OUT) -> CaptionScores:
    """Aggregates per-scene outcomes `correct` (N) by the kind of each true caption, seen and held-out apart."""
    if len(correct) != len(truths):
        raise ValueError(f"{len(correct)} outcomes but {len(truths)} captions; give one outcome per caption.")
    hits: dict[bool, dict[str, list[bool]]] = {False: {k: [] for k in KINDS}, True: {k: [] for k in KINDS}}
    for ok, truth in zip(correct, truths):
        cap = parse_caption(truth)
        hits[names_held_out(cap, held_out)][cap.kind].append(bool(ok))
    mean = lambda xs: float(np.mean(xs)) if xs else math.nan
    acc = {h: {k: mean(v) for k, v in hits[h].items() if v} for h in hits}
    num = {h: {k: len(v) for k, v in hits[h].items() if v} for h in hits}
    flat = lambda h: [x for v in hits[h].values() for x in v]
    return CaptionScores(acc[False], acc[True], num[False], num[True], mean(flat(False) + flat(True)),
                         mean(flat(False)), mean(flat(True)))


def caption_accuracy(predicted: Sequence[str], truths: Sequence[str],
                     held_out: Sequence[str] = DEFAULT_HELD_OUT) -> CaptionScores:
    """The share of predicted captions that describe exactly their scene (`same_scene`), per kind and overall."""
    if len(predicted) != len(truths):
        raise ValueError(f"{len(predicted)} predicted captions but {len(truths)} true ones; give one per scene.")
    return score([same_scene(p, t) for p, t in zip(predicted, truths)], truths, held_out)


def distractors(truth: str, n: int, rng: np.random.Generator) -> list[str]:
    """`n` captions of the same kind as `truth` that describe other scenes, drawn without replacement."""
    kind, scene = parse_caption(truth).kind, scene_of(truth)
    pool = [c for c in _BY_KIND[kind] if scene_of(c) != scene]
    if n > len(pool):
        raise ValueError(f"{n} distractors asked for a {kind!r} caption, but only {len(pool)} other scenes exist.")
    return [pool[i] for i in rng.choice(len(pool), n, replace=False)]


_BY_KIND = {k: [c for c in all_captions() if parse_caption(c).kind == k] for k in KINDS}
