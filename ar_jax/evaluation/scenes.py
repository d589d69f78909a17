"""GenEval-style evaluation of text-to-image samples on the captioned scenes, judged from pixels (no learned model).

The judge (`detect_objects`) finds objects as the connected components (8-neighbour) of pixels whose brightest
channel passes `FOREGROUND` (scene backgrounds stay <= 40; every palette colour, jittered, has a channel >= 175),
drops specks under `MIN_AREA` pixels (at 32 px, scaled with the area), and names each component's colour (the
nearest palette colour to its mean RGB) and shape (the circle, square or apex-up triangle template drawn in its
bounding box with the highest IoU, None below `MIN_SHAPE_IOU`). Centre and half-size come from the box.

GenEval's tasks, adapted: a caption names every object of its scene, so an extra object is a failure.

    caption kind                      task               correct when the image has
    a {c} {s}                         single_object      exactly one object, of shape s
                                      colors             exactly one object, of shape s and colour c
    {two|three} {c} {s}s              counting           exactly n objects, all of shape s and colour c
    a {c1} {s1} {rel} a {c2} {s2}     two_object         exactly two objects, of shapes s1 and s2
                                      color_attribution  exactly two objects: a c1 s1 and a c2 s2
                                      position           as color_attribution, and the c1 s1 is rel the c2 s2:
                                                         their boxes do not overlap along the axis, in that order

Scores are task accuracies over samples, kept apart for prompts that name a held-out combination; `overall` is the
mean of the task accuracies (as GenEval's). `scene_prompts` is the fixed prompt list, `evaluate` samples and scores
it with any `sample(prompts, seed) -> uint8 [B, H, W, 3]`, and `calibration` scores the generator's own renderings
of the prompts against their captions (about 1) and against shuffled captions (about 0).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from ar_jax.data.scenes import (
    COLORS,
    COUNT_WORDS,
    DEFAULT_HELD_OUT,
    RELATIONS,
    SHAPES,
    SIZE,
    Caption,
    all_combos,
    parse_caption,
    parse_held_out,
    render,
)

__all__ = ["Caption", "Detected", "SceneScores", "TASKS", "TASKS_BY_KIND", "calibration", "detect_objects",
           "evaluate", "judge", "parse_caption", "sample_prompts", "scene_prompts", "score"]

TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attribution")
TASKS_BY_KIND = {"single": ("single_object", "colors"), "count": ("counting",),
                 "relation": ("two_object", "position", "color_attribution")}
FOREGROUND = 125  # brightest channel above this: object pixel (backgrounds <= 40, objects >= 175; nearer the
# objects, so that a blurred sample's 1-px gap between two objects stays background)
MIN_AREA = 12  # pixels at 32 px (scaled by (side / 32)^2); the smallest object has about 50
MIN_SHAPE_IOU = 0.6

_PALETTE = np.array(list(COLORS.values()), np.float32)  # [6, 3]


@dataclasses.dataclass(frozen=True)
class Detected:
    """One object found in an image: names, box centre (column, row), half-size and box `(y0, x0, y1, x1)`."""

    color: str
    shape: str | None  # None: no template fits (IoU < MIN_SHAPE_IOU)
    cx: float
    cy: float
    half: float
    box: tuple[int, int, int, int]  # inclusive pixel bounds
    area: int
    iou: float  # of the chosen shape template


def _templates(h: int, w: int) -> np.ndarray:
    """Shapes filling an `h` x `w` box, bool `[T, h, w]` with `_TEMPLATE_SHAPE[t]` naming each: ellipses whose radius
    sweeps from the box's half pixel extent to almost a pixel more (where a disc of that extent can reach: then it
    fills ~90% of its box), the box itself, and an apex-up triangle."""
    y, x = np.arange(h)[:, None] - (h - 1) / 2, np.arange(w)[None] - (w - 1) / 2  # offsets from the box centre
    circles = [(x / ((w - 1) / 2 + k)) ** 2 + (y / ((h - 1) / 2 + k)) ** 2 <= 1.0 for k in _RADIUS_STEPS]
    triangle = np.abs(x / (w / 2)) <= (y / (h / 2) + 1) / 2 + 1.0 / w
    return np.stack(circles + [np.ones((h, w), bool), np.broadcast_to(triangle, (h, w))])


_RADIUS_STEPS = (0.0, 0.2, 0.4, 0.6, 0.8, 0.95)  # pixels added to the half extent: a disc's radius is in [0, 1)
_TEMPLATE_SHAPE = (0,) * len(_RADIUS_STEPS) + (1, 2)  # index into SHAPES of each template


def detect_objects(image: np.ndarray) -> list[Detected]:
    """The objects of one uint8 image `[H, W, 3]`, in order of their first pixel (row-major)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"detect_objects takes one RGB image [H, W, 3], got shape {image.shape}.")
    labels, _ = ndimage.label(image.max(-1) > FOREGROUND, structure=np.ones((3, 3), bool))
    min_area = MIN_AREA * image.shape[0] * image.shape[1] / SIZE ** 2
    found = []
    for k, sl in enumerate(ndimage.find_objects(labels), 1):
        mask = labels[sl] == k
        area = int(mask.sum())
        if area < min_area:
            continue
        rgb = image[sl][mask].astype(np.float32).mean(0)
        color = list(COLORS)[int(((_PALETTE - rgb) ** 2).sum(-1).argmin())]
        t = _templates(*mask.shape)
        iou = (t & mask).sum((1, 2)) / (t | mask).sum((1, 2))
        best = int(iou.argmax())
        shape = SHAPES[_TEMPLATE_SHAPE[best]] if iou[best] >= MIN_SHAPE_IOU else None
        (y0, y1), (x0, x1) = (sl[0].start, sl[0].stop - 1), (sl[1].start, sl[1].stop - 1)
        found.append(Detected(color, shape, (x0 + x1) / 2,
                              (y0 + y1) / 2, max(y1 - y0 + 1, x1 - x0 + 1) / 2, (y0, x0, y1, x1), area,
                              float(iou[best])))
    return found


def _holds(a: Detected, b: Detected, relation: str) -> bool:
    """`a` is `relation` `b`: their boxes are disjoint along the relation's axis, in that order."""
    ay0, ax0, ay1, ax1 = a.box
    by0, bx0, by1, bx1 = b.box
    return {"left of": ax1 < bx0, "right of": ax0 > bx1, "above": ay1 < by0, "below": ay0 > by1}[relation]


def judge(image: np.ndarray, caption: str | Caption) -> dict[str, bool]:
    """The caption kind's tasks (`TASKS_BY_KIND`) -> whether uint8 `image [H, W, 3]` passes each."""
    cap = caption if isinstance(caption, Caption) else parse_caption(caption)
    found = detect_objects(image)
    named = [(o.color, o.shape) for o in found]
    if cap.kind == "single":
        (c, s), = cap.objects
        one = len(found) == 1 and found[0].shape == s
        return {"single_object": one, "colors": one and found[0].color == c}
    if cap.kind == "count":
        return {"counting": named == list(cap.objects)}
    two = len(found) == 2
    a, b = cap.objects
    bound = two and sorted(named, key=str) == sorted([a, b], key=str)
    position = bound and _holds(found[named.index(a)], found[named.index(b)], cap.relation)
    return {"two_object": two and sorted(o.shape or "" for o in found) == sorted([a[1], b[1]]),
            "color_attribution": bound, "position": position}


def names_held_out(caption: str | Caption, held_out: Sequence[str]) -> bool:
    """Whether the caption names one of the `held_out` "color shape" combinations."""
    cap = caption if isinstance(caption, Caption) else parse_caption(caption)
    return any(o in parse_held_out(held_out) for o in cap.objects)


@dataclasses.dataclass(frozen=True)
class SceneScores:
    """Task accuracies over samples of prompts without (`accuracy`) and with (`held_out_accuracy`) a held-out
    combination; a task with no such samples is absent. `overall`: mean of the task accuracies (nan if none)."""

    accuracy: dict[str, float]
    held_out_accuracy: dict[str, float]
    counts: dict[str, int]  # samples behind each accuracy
    held_out_counts: dict[str, int]

    @property
    def overall(self) -> float:
        return float(np.mean(list(self.accuracy.values()))) if self.accuracy else math.nan

    @property
    def held_out_overall(self) -> float:
        return float(np.mean(list(self.held_out_accuracy.values()))) if self.held_out_accuracy else math.nan

    def as_json(self) -> dict[str, object]:
        """Flat: `overall`, each task's accuracy, `held_out_overall`, `held_out` (task -> accuracy); nan -> None."""
        clean = lambda x: None if math.isnan(x) else round(x, 4)
        return {"overall": clean(self.overall), **{t: clean(a) for t, a in self.accuracy.items()},
                "held_out_overall": clean(self.held_out_overall),
                "held_out": {t: clean(a) for t, a in self.held_out_accuracy.items()}}


def score(images: np.ndarray, captions: Sequence[str], held_out: Sequence[str] = DEFAULT_HELD_OUT) -> SceneScores:
    """Judges uint8 `images [N, H, W, 3]` against `captions` (N) and aggregates task accuracies."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions; give one caption per image.")
    hits = {False: {t: [] for t in TASKS}, True: {t: [] for t in TASKS}}
    for image, caption in zip(images, captions):
        cap = parse_caption(caption)
        for task, ok in judge(image, cap).items():
            hits[names_held_out(cap, held_out)][task].append(ok)
    acc = {h: {t: float(np.mean(v)) for t, v in hits[h].items() if v} for h in hits}
    num = {h: {t: len(v) for t, v in hits[h].items() if v} for h in hits}
    return SceneScores(acc[False], acc[True], num[False], num[True])


def scene_prompts(held_out: Sequence[str] = DEFAULT_HELD_OUT, num_relations: int = 32,
                  seed: int = 0) -> tuple[list[str], list[str]]:
    """The fixed prompt list `(seen, held_out_prompts)`: every colour-shape pair alone and counted two and three
    times, and `num_relations` relation prompts drawn with `seed` from those without a held-out pair; each held-out
    pair also in one prompt per relation as the first and as the second object."""
    hold = parse_held_out(held_out)
    combos = all_combos()
    singles = [Caption("single", (o,)) for o in combos]
    counts = [Caption("count", (o,) * n) for n in COUNT_WORDS for o in combos]
    relations = [Caption("relation", (a, b), r) for a, b in itertools.permutations(combos, 2) if a[0] != b[0]
                 for r in RELATIONS]
    rng = np.random.default_rng(seed)
    seen_rel = [c for c in relations if not set(c.objects) & hold]
    picked = [seen_rel[i] for i in sorted(rng.choice(len(seen_rel), min(num_relations, len(seen_rel)), False))]
    partners = [o for o in combos if o not in hold]
    held_rel = []
    for h in sorted(hold):
        others = [o for o in partners if o[0] != h[0]]
        for r in RELATIONS:
            first, second = (others[i] for i in rng.choice(len(others), 2, replace=False))
            held_rel += [Caption("relation", (h, first), r), Caption("relation", (second, h), r)]
    split = lambda caps: ([c.text for c in caps if not set(c.objects) & hold],
                          [c.text for c in caps if set(c.objects) & hold])
    seen, held = zip(*(split(caps) for caps in (singles, counts, picked, held_rel)))
    return [t for part in seen for t in part], [t for part in held for t in part]


def sample_prompts(sample: Callable[[list[str], int], np.ndarray], prompts: Sequence[str],
                   samples_per_prompt: int = 4, batch_size: int = 64, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Images uint8 `[P * samples_per_prompt, H, W, 3]` and their captions (each prompt repeated): `sample` gets
    batches of exactly `batch_size` prompts (the last padded, so it compiles once) and seed `seed * 100_000 + i`."""
    if not prompts:
        raise ValueError("no prompts to sample; give at least one.")
    captions = [p for p in prompts for _ in range(samples_per_prompt)]
    bs = min(batch_size, len(captions))
    padded = captions + captions[-1:] * (-len(captions) % bs)
    images = [np.asarray(sample(padded[i:i + bs], seed * 100_000 + i // bs)) for i in range(0, len(padded), bs)]
    images = np.concatenate(images)[: len(captions)]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"the sampler returned {images.dtype} images of shape {images.shape}; the scenes judge "
                         "needs uint8 RGB [B, H, W, 3].")
    return images, captions


def evaluate(sample: Callable[[list[str], int], np.ndarray], held_out: Sequence[str] = DEFAULT_HELD_OUT,
             samples_per_prompt: int = 4, batch_size: int = 64, seed: int = 0, num_relations: int = 32) -> SceneScores:
    """Samples `scene_prompts(held_out)` with `sample(prompts, seed) -> uint8 [B, H, W, 3]` and scores them."""
    seen, held = scene_prompts(held_out, num_relations)
    images, captions = sample_prompts(sample, seen + held, samples_per_prompt, batch_size, seed)
    return score(images, captions, held_out)


def calibration(held_out: Sequence[str] = DEFAULT_HELD_OUT, samples_per_prompt: int = 4, size: int = SIZE,
                seed: int = 0, num_relations: int = 32) -> dict[str, SceneScores]:
    """No model: the generator's renderings of the prompt list scored against their own captions ("generator",
    about 1) and against the captions of other images ("shuffled", a derangement; about 0)."""
    seen, held = scene_prompts(held_out, num_relations)
    images, captions = sample_prompts(lambda p, s: render(p, s, size)[0], seen + held, samples_per_prompt,
                                      batch_size=len(seen + held) * samples_per_prompt, seed=seed)
    perm = np.random.default_rng(seed).permutation(len(captions))
    shuffled = [""] * len(captions)
    for i, j in zip(perm, np.roll(perm, -1)):
        shuffled[i] = captions[j]
    return {"generator": score(images, captions, held_out), "shuffled": score(images, shuffled, held_out)}
