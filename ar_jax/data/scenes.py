"""Procedural captioned scenes: RGB images of 1-3 coloured shapes on a dark background, each with a caption.

Every image (side `size`, default 32, at least 32; lengths below are at 32 px and scale with the side) has a
plain background (each channel 0..40, per image) and 1-3 objects, each a circle, square or apex-up triangle of
half-size 5-7 px in one of six colours (`COLORS`, each channel jittered by -15..15 per object), fully inside the
image and at least 2 px apart (the gap between their boxes `[c - h, c + h]` along x or y). Shapes fill their box:
circle `dx^2 + dy^2 <= h^2`, square `max(|dx|, |dy|) <= h`, triangle `|dx| <= (dy + h) / 2` for `|dy| <= h`.
The caption names every object, in one of three kinds (chosen 1/3 each, or by `kind_weights`):

    a {color} {shape}                                     one object ("single")
    {two|three} {color} {shape}s                          2 or 3 objects of one colour and shape ("count")
    a {color} {shape} {relation} a {color} {shape}        two objects of two colours ("relation")

where the relation (`RELATIONS`) says where the first-named object is: "a red circle left of a blue square" has
the circle's centre at least the sum of the two half-sizes plus the gap to the left of the square's.

`held_out` colour-shape combinations ("purple triangle") never appear in the training split; the test split
draws from all 18. Train and test come from disjoint streams of `SeedSequence(seed)`, so the test split does not
change with `num_train` or `held_out`. `render(captions, seed)` draws scenes for given captions (an oracle
sampler for the judge in `ar_jax/evaluation/scenes.py`).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Sequence

import ml_collections
import numpy as np

from ar_jax.data.sources import ImageDataset, require

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 240),
    "yellow": (235, 215, 40), "purple": (150, 60, 210), "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle")
RELATIONS = ("left of", "right of", "above", "below")
COUNT_WORDS = {2: "two", 3: "three"}
KINDS = ("single", "count", "relation")
DEFAULT_HELD_OUT = ("purple triangle", "yellow circle")

SIZE = 32  # default image side; every length below is at this side and scales with size / SIZE
MIN_HALF, MAX_HALF = 5.0, 7.0  # half-size of an object, pixels
GAP = 2.0  # least distance between two objects' boxes, pixels
MAX_BACKGROUND = 40  # every background channel is at most this
JITTER = 15  # each object's colour channel moves by at most this many levels
MAX_OBJECTS = 3
TRIES, SIZE_ROUNDS = 64, 20  # placement: draws per object, and fresh sizes after this many failed scenes

_PALETTE = np.array(list(COLORS.values()), np.int32)  # [6, 3]
_COLOR_NAMES = tuple(COLORS)
_CHUNK = 2048  # images rendered at once (bounds memory at large sides)


@dataclasses.dataclass(frozen=True)
class Caption:
    """A caption's structure: `objects` are the (color, shape) pairs it names in order (a count repeats one)."""

    kind: str  # one of KINDS
    objects: tuple[tuple[str, str], ...]
    relation: str | None = None  # one of RELATIONS for kind "relation"

    @property
    def text(self) -> str:
        (c, s), n = self.objects[0], len(self.objects)
        if self.kind == "single":
            return f"a {c} {s}"
        if self.kind == "count":
            return f"{COUNT_WORDS[n]} {c} {s}s"
        c2, s2 = self.objects[1]
        return f"a {c} {s} {self.relation} a {c2} {s2}"


_WORD = {"color": "|".join(COLORS), "shape": "|".join(SHAPES)}
_OBJ = r"({color}) ({shape})".format(**_WORD)
_PATTERNS = {
    "single": re.compile(rf"a {_OBJ}"),
    "count": re.compile(r"({}) ({color}) ({shape})s".format("|".join(COUNT_WORDS.values()), **_WORD)),
    "relation": re.compile(rf"a {_OBJ} ({'|'.join(RELATIONS)}) a {_OBJ}"),
}


def parse_caption(text: str) -> Caption:
    """A caption string (any case, surrounding spaces ignored) -> its `Caption`; ValueError for any other text."""
    t = " ".join(str(text).lower().split())
    if m := _PATTERNS["single"].fullmatch(t):
        return Caption("single", ((m[1], m[2]),))
    if m := _PATTERNS["count"].fullmatch(t):
        n = {w: k for k, w in COUNT_WORDS.items()}[m[1]]
        return Caption("count", ((m[2], m[3]),) * n)
    if (m := _PATTERNS["relation"].fullmatch(t)) and m[1] != m[4]:
        return Caption("relation", ((m[1], m[2]), (m[4], m[5])), m[3])
    raise ValueError(f"caption {text!r} is not a scenes caption: use 'a {{color}} {{shape}}', "
                     f"'{{two|three}} {{color}} {{shape}}s' or 'a {{color}} {{shape}} {{relation}} a {{color}} "
                     f"{{shape}}' (two different colours) with color in {list(COLORS)}, shape in {list(SHAPES)}, "
                     f"relation in {list(RELATIONS)}.")


def parse_held_out(held_out: Sequence[str]) -> frozenset[tuple[str, str]]:
    """`["purple triangle", ...]` -> {("purple", "triangle"), ...}; ValueError naming a string that is not a combo."""
    if isinstance(held_out, str):
        raise ValueError(f"held_out={held_out!r} must be a list of 'color shape' strings, "
                         f"e.g. {list(DEFAULT_HELD_OUT)}.")
    combos = set()
    for item in held_out:
        words = str(item).lower().split()
        if len(words) != 2 or words[0] not in COLORS or words[1] not in SHAPES:
            raise ValueError(f"held_out entry {item!r} is not a 'color shape' pair; use a colour in {list(COLORS)} "
                             f"and a shape in {list(SHAPES)}, e.g. 'purple triangle'.")
        combos.add((words[0], words[1]))
    return frozenset(combos)


def all_combos() -> list[tuple[str, str]]:
    """The 18 (color, shape) pairs, colours then shapes in constant order."""
    return list(itertools.product(COLORS, SHAPES))


def all_captions() -> list[str]:
    """Every caption the grammar allows (18 single, 36 count, 1080 relation), in a fixed order."""
    combos = all_combos()
    out = [Caption("single", (o,)).text for o in combos]
    out += [Caption("count", (o,) * n).text for n in COUNT_WORDS for o in combos]
    out += [Caption("relation", (a, b), r).text for a in combos for r in RELATIONS for b in combos if a[0] != b[0]]
    return out


@dataclasses.dataclass(frozen=True)
class SceneObjects:
    """Per-image object metadata, object slots in caption order; unused slots have color = shape = -1 (and 0 in the
    other fields)."""

    count: np.ndarray  # int32 [N], objects in the image (1..3)
    color: np.ndarray  # int32 [N, 3], index into COLORS
    shape: np.ndarray  # int32 [N, 3], index into SHAPES
    relation: np.ndarray  # int32 [N], index into RELATIONS, -1 unless the caption is a relation
    cx: np.ndarray  # float32 [N, 3], centre column, pixels (pixel centres at integers)
    cy: np.ndarray  # float32 [N, 3], centre row
    half: np.ndarray  # float32 [N, 3], half-size
    rgb: np.ndarray  # uint8 [N, 3, 3], each object's jittered colour


def _check_size(size: int) -> int:
    if int(size) != size or size < SIZE:
        raise ValueError(f"image_size={size!r} must be an integer >= {SIZE} (objects are 10-14 px at 32 px and "
                         "scale with the side).")
    return int(size)


def _structures(n: int, rng: np.random.Generator, held_out: frozenset, kind_weights: Sequence[float]):
    """Sampled kinds, counts, colours, shapes and relations of `n` scenes, avoiding `held_out` combos."""
    w = np.asarray(kind_weights, np.float64)
    if w.shape != (len(KINDS),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"kind_weights={tuple(kind_weights)} must be {len(KINDS)} non-negative weights for "
                         f"{KINDS} with a positive sum, e.g. (1, 1, 1).")
    allowed = np.array([(_COLOR_NAMES.index(c), SHAPES.index(s)) for c, s in all_combos() if (c, s) not in held_out])
    if len(set(allowed[:, 0].tolist())) < 2:
        raise ValueError(f"held_out={sorted(held_out)} leaves fewer than two colours for relation scenes; "
                         "hold out fewer combinations.")
    kind = rng.choice(len(KINDS), size=n, p=w / w.sum())
    count = np.where(kind == 0, 1, np.where(kind == 1, rng.integers(2, 4, n), 2))
    a = allowed[rng.integers(0, len(allowed), n)]  # [n, 2] (color, shape)
    b = allowed[rng.integers(0, len(allowed), n)]
    while (same := (b[:, 0] == a[:, 0]) & (kind == 2)).any():
        b[same] = allowed[rng.integers(0, len(allowed), int(same.sum()))]
    combo = np.repeat(a[:, None], MAX_OBJECTS, axis=1)  # [n, 3, 2]
    combo[kind == 2, 1] = b[kind == 2]
    combo[np.arange(MAX_OBJECTS)[None] >= count[:, None]] = -1
    relation = np.where(kind == 2, rng.integers(0, len(RELATIONS), n), -1)
    return count.astype(np.int32), combo[..., 0].astype(np.int32), combo[..., 1].astype(np.int32), relation


def _place_free(half: np.ndarray, count: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Centres `[2, N, 3]` (x, y) of `count` objects each, boxes apart by GAP: object by object, each from up to
    TRIES uniform draws; a scene where one finds no room starts again, with new sizes every SIZE_ROUNDS tries."""
    n, scale, hi = len(count), size / SIZE, size - 1.0
    centre = np.zeros((2, n, MAX_OBJECTS))
    todo = np.arange(n)
    for attempt in range(1, 10_000):
        if not len(todo):
            return centre
        if attempt % SIZE_ROUNDS == 0:
            half[todo] = rng.uniform(MIN_HALF, MAX_HALF, (len(todo), MAX_OBJECTS)) * scale
        placed = np.ones(len(todo), bool)
        for slot in range(MAX_OBJECTS):
            h = half[todo, slot]  # [m]
            cand = rng.uniform(h, hi - h, (TRIES, 2, len(todo)))  # [T, xy, m]
            valid = np.ones((TRIES, len(todo)), bool)
            for prev in range(slot):
                dist = np.abs(cand - centre[:, todo, prev][None]) - (h + half[todo, prev])  # [T, xy, m]
                valid &= dist.max(1) >= GAP * scale
            centre[:, todo, slot] = cand[valid.argmax(0), :, np.arange(len(todo))].T
            placed &= valid.any(0) | (count[todo] <= slot)
        todo = todo[~placed]
    raise RuntimeError(f"could not place the objects of {len(todo)} scenes without overlap; this is a bug.")


def _place(count: np.ndarray, relation: np.ndarray, rng: np.random.Generator, size: int):
    """Centres and half-sizes `[N, 3]` of non-overlapping objects inside the image; relations hold by construction."""
    n, scale, hi = len(count), size / SIZE, size - 1.0
    half = rng.uniform(MIN_HALF, MAX_HALF, (n, MAX_OBJECTS)) * scale
    rel = relation >= 0  # placed apart below: along the relation's axis the low one (left / above), a gap, the high one
    centre = _place_free(half, np.where(rel, 0, count), rng, size)
    if rel.any():
        h0, h1, r = half[rel, 0], half[rel, 1], relation[rel]
        first_low = (r == 0) | (r == 2)  # "left of" / "above": the first-named object has the smaller coordinate
        h_low, h_high = np.where(first_low, h0, h1), np.where(first_low, h1, h0)
        slack = hi - 2 * (h_low + h_high) - GAP * scale  # >= 0 for size >= 32
        u = np.sort(rng.uniform(0.0, 1.0, (2, len(r))), axis=0) * slack
        low = h_low + u[0]
        high = low + h_low + h_high + GAP * scale + (u[1] - u[0])
        axis, idx = (r >= 2).astype(int), np.flatnonzero(rel)
        centre[axis, idx, 0] = np.where(first_low, low, high)
        centre[axis, idx, 1] = np.where(first_low, high, low)
        centre[1 - axis, idx, :2] = rng.uniform(half[rel, :2], hi - half[rel, :2])  # [m, 2]
    present = np.arange(MAX_OBJECTS)[None] < count[:, None]
    return tuple(np.where(present, v, 0).astype(np.float32) for v in (centre[0], centre[1], half))


def _masks(shape: int, cx: np.ndarray, cy: np.ndarray, half: np.ndarray, size: int) -> np.ndarray:
    """Boolean masks `[M, size, size]` of one `shape` index for centres/half-sizes `[M]`."""
    grid = np.arange(size, dtype=np.float32)
    dx = grid[None, None, :] - cx[:, None, None]
    dy = grid[None, :, None] - cy[:, None, None]
    h = half[:, None, None]
    if shape == 0:
        return dx ** 2 + dy ** 2 <= h ** 2
    if shape == 1:
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    return (np.abs(dy) <= h) & (np.abs(dx) <= (dy + h) / 2)


def _render(objects: SceneObjects, background: np.ndarray, size: int) -> np.ndarray:
    """uint8 images `[N, size, size, 3]`: each background `[N, 3]`, then each object painted in its colour."""
    n = len(objects.count)
    images = np.empty((n, size, size, 3), np.uint8)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        out = np.broadcast_to(background[sl, None, None], (sl.stop - start, size, size, 3)).copy()
        for slot in range(MAX_OBJECTS):
            for s in range(len(SHAPES)):
                idx = np.flatnonzero(objects.shape[sl, slot] == s)
                if len(idx):
                    m = _masks(s, objects.cx[sl, slot][idx], objects.cy[sl, slot][idx], objects.half[sl, slot][idx],
                               size)
                    out[idx] = np.where(m[..., None], objects.rgb[sl, slot][idx][:, None, None], out[idx])
        images[sl] = out
    return images


def _draw(count, color, shape, relation, rng: np.random.Generator, size: int) -> tuple[np.ndarray, SceneObjects]:
    """Places, colours and renders scenes of the given structure."""
    cx, cy, half = _place(count, relation, rng, size)
    background = rng.integers(0, MAX_BACKGROUND + 1, (len(count), 3))
    jitter = rng.integers(-JITTER, JITTER + 1, (len(count), MAX_OBJECTS, 3))
    rgb = np.clip(_PALETTE[np.maximum(color, 0)] + jitter, 0, 255) * (color >= 0)[..., None]  # unused slots: 0
    rgb = rgb.astype(np.uint8)
    objects = SceneObjects(count, color, shape, relation.astype(np.int32), cx, cy, half, rgb)
    return _render(objects, background.astype(np.uint8), size), objects


def _caption(count: int, color: np.ndarray, shape: np.ndarray, relation: int) -> str:
    objs = tuple((_COLOR_NAMES[c], SHAPES[s]) for c, s in zip(color[:count], shape[:count]))
    kind = "relation" if relation >= 0 else ("single" if count == 1 else "count")
    return Caption(kind, objs, RELATIONS[relation] if relation >= 0 else None).text


def generate(n: int, seed: int | np.random.SeedSequence, size: int = SIZE,
             held_out: Sequence[str] = DEFAULT_HELD_OUT,
             kind_weights: Sequence[float] = (1.0, 1.0, 1.0)) -> tuple[np.ndarray, list[str], SceneObjects]:
    """`n` scenes from `default_rng(seed)`: uint8 images `[n, size, size, 3]`, captions, and object metadata.

    No image contains a `held_out` combination ("color shape" strings); pass `()` to allow all 18.
    """
    size = _check_size(size)
    rng = np.random.default_rng(seed)
    count, color, shape, relation = _structures(n, rng, parse_held_out(held_out), kind_weights)
    images, objects = _draw(count, color, shape, relation, rng, size)
    captions = [_caption(*args) for args in zip(count, color, shape, relation)]
    return images, captions, objects


def render(captions: Sequence[str], seed: int, size: int = SIZE) -> tuple[np.ndarray, SceneObjects]:
    """Scenes drawn for the given captions (any combination allowed): uint8 `[len(captions), size, size, 3]`."""
    size = _check_size(size)
    parsed = [parse_caption(c) for c in captions]
    n = len(parsed)
    count = np.array([len(p.objects) for p in parsed], np.int32)
    color, shape = np.full((n, MAX_OBJECTS), -1, np.int32), np.full((n, MAX_OBJECTS), -1, np.int32)
    for i, p in enumerate(parsed):
        for j, (c, s) in enumerate(p.objects):
            color[i, j], shape[i, j] = _COLOR_NAMES.index(c), SHAPES.index(s)
    relation = np.array([RELATIONS.index(p.relation) if p.relation else -1 for p in parsed], np.int32)
    return _draw(count, color, shape, relation, np.random.default_rng(seed), size)


def scenes_dataset(num_train: int = 20_000, num_test: int = 1000, seed: int = 0, size: int = SIZE,
                   held_out: Sequence[str] = DEFAULT_HELD_OUT,
                   kind_weights: Sequence[float] = (1.0, 1.0, 1.0)) -> ImageDataset:
    """Captioned train/test scenes: test from `SeedSequence(seed)`'s first child stream (all combinations),
    train from its second (no `held_out` combination). Labels are zeros, `num_classes=0`."""
    if num_train < 1 or num_test < 1:
        raise ValueError(f"num_train={num_train} and num_test={num_test} must both be >= 1.")
    test_ss, train_ss = np.random.SeedSequence(seed).spawn(2)
    test_x, test_c, _ = generate(num_test, test_ss, size, held_out=(), kind_weights=kind_weights)
    parse_held_out(held_out)  # a bad entry fails here whatever the test split held
    train_x, train_c, _ = generate(num_train, train_ss, size, held_out=held_out, kind_weights=kind_weights)
    return ImageDataset(train_x, np.zeros(num_train, np.int32), test_x, np.zeros(num_test, np.int32), num_classes=0,
                        train_captions=tuple(train_c), test_captions=tuple(test_c))


def from_config(data_config: ml_collections.ConfigDict) -> ImageDataset:
    """The source registered as "scenes": `config.data.{num_train, num_test, seed, image_size, held_out,
    kind_weights}`."""
    return scenes_dataset(int(require(data_config, "num_train")), int(require(data_config, "num_test")),
                          int(require(data_config, "seed")), int(require(data_config, "image_size")),
                          tuple(require(data_config, "held_out")), tuple(require(data_config, "kind_weights")))
