"""Caption evaluation on the captioned scenes: whether a caption describes exactly its scene, and ranking candidates.

A caption is parsed into its structure (`ar_jax.data.scenes.parse_caption`: kind, objects with colour and shape, a
count, a relation) and checked against the scene itself (`describes`, from the generator's object metadata): it
names every object, with its colour and shape, and no other (so the count too), and a relation it states holds in
the image, from either object ("a red circle left of a blue square" is "a blue square right of a red circle"): their
boxes are apart along the relation's axis, in that order, as the pixel judge of `ar_jax/evaluation/scenes.py` asks.
The scene's own caption states one relation; another may hold as well (two objects placed apart along x are often
apart along y too), and a caption stating it describes the scene as exactly. Text that is not a scenes caption
describes no scene. `distractors` draws captions of the scene's kind that do not describe it, for ranking by
`pipe.caption_logprob` (zero-shot recognition, as ImageGPT's probes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from ar_jax.data.scenes import (
    COLORS,
    DEFAULT_HELD_OUT,
    KINDS,
    SHAPES,
    Caption,
    SceneObjects,
    all_captions,
    parse_caption,
)
from ar_jax.evaluation.scenes import names_held_out


def _parse(caption: str | Caption) -> Caption | None:
    if isinstance(caption, Caption):
        return caption
    try:
        return parse_caption(caption)
    except ValueError:
        return None


def _holds(objects: SceneObjects, i: int, a: int, b: int, relation: str) -> bool:
    """Object slot `a` of scene `i` is `relation` slot `b`: their boxes `[c - h, c + h]` are apart along the
    relation's axis, in that order (rows grow downwards)."""
    c = objects.cx if relation in ("left of", "right of") else objects.cy
    lo, hi = (a, b) if relation in ("left of", "above") else (b, a)
    return bool(c[i, lo] + objects.half[i, lo] < c[i, hi] - objects.half[i, hi])


def describes(caption: str | Caption, objects: SceneObjects, i: int) -> bool:
    """Whether `caption` describes exactly scene `i` of `objects` (the generator's metadata): every object named, with
    its colour and shape, none more, and a stated relation holding in the image."""
    cap = _parse(caption)
    if cap is None:
        return False
    n = int(objects.count[i])
    scene = [(list(COLORS)[objects.color[i, k]], SHAPES[objects.shape[i, k]]) for k in range(n)]
    if sorted(cap.objects) != sorted(scene):
        return False
    if cap.kind != "relation":
        return cap.kind == ("single" if n == 1 else "count")
    a, b = (scene.index(o) for o in cap.objects)  # a relation names two objects of different colours
    return _holds(objects, i, a, b, cap.relation)


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


def caption_accuracy(predicted: Sequence[str], objects: SceneObjects, truths: Sequence[str],
                     held_out: Sequence[str] = DEFAULT_HELD_OUT) -> CaptionScores:
    """The share of predicted captions that describe exactly their scene (`describes`), per kind of the scene's own
    caption (`truths`) and overall."""
    if not len(predicted) == len(truths) == len(objects.count):
        raise ValueError(f"{len(predicted)} predicted captions, {len(truths)} true ones and {len(objects.count)} "
                         "scenes; give one of each per scene.")
    return score([describes(p, objects, i) for i, p in enumerate(predicted)], truths, held_out)


def distractors(truth: str, objects: SceneObjects, i: int, n: int, rng: np.random.Generator) -> list[str]:
    """`n` captions of the kind of scene `i`'s caption `truth` that do not describe that scene, drawn without
    replacement."""
    kind = parse_caption(truth).kind
    pool = [c.text for c in _BY_KIND[kind] if not describes(c, objects, i)]
    if n > len(pool):
        raise ValueError(f"{n} distractors asked for a {kind!r} scene, but only {len(pool)} captions do not "
                         "describe it.")
    return [pool[k] for k in rng.choice(len(pool), n, replace=False)]


_BY_KIND = {k: [c for c in map(parse_caption, all_captions()) if c.kind == k] for k in KINDS}
