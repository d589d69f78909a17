"""Caption evaluation on the scenes: a caption against the scene's objects (any relation that holds, from either
object), scores per kind, distractors that do not describe the scene."""

import dataclasses

import numpy as np
import pytest

from ar_jax.data.scenes import parse_caption, render
from ar_jax.evaluation import captions as cap


def scene(caption, cx=None, cy=None):
    """One rendered scene of `caption`, its object centres moved to `cx`, `cy` (half-sizes 6) if given."""
    _, objects = render([caption], seed=0)
    if cx is not None:
        objects = dataclasses.replace(objects, cx=np.array([cx + [0]], np.float32),
                                      cy=np.array([cy + [0]], np.float32), half=np.full((1, 3), 6.0, np.float32))
    return objects


@pytest.mark.parametrize("predicted,ok", [
    ("a red circle left of a blue square", True),
    ("a blue square right of a red circle", True),  # from the other object
    ("A  Red circle left of a blue square", True),
    ("a red circle above a blue square", True),  # also true here: the circle is up and to the left
    ("a blue square below a red circle", True),
    ("a red circle right of a blue square", False),
    ("a red circle below a blue square", False),
    ("a red square left of a blue square", False),
    ("a red circle left of a green square", False),
    ("two red circles", False),
    ("a red circle", False),
    ("a red circle left of", False),  # not a scenes caption: describes nothing
    ("", False),
])
def test_a_caption_against_the_scene(predicted, ok):
    objects = scene("a red circle left of a blue square", cx=[6.0, 24.0], cy=[6.0, 24.0])
    assert cap.describes(predicted, objects, 0) is ok


def test_a_relation_must_hold_in_the_image():
    objects = scene("a red circle left of a blue square", cx=[6.0, 24.0], cy=[14.0, 18.0])  # boxes overlap in y
    assert cap.describes("a red circle left of a blue square", objects, 0)
    assert not cap.describes("a red circle above a blue square", objects, 0)
    counted = scene("three green triangles")
    assert cap.describes("three green triangles", counted, 0) and not cap.describes("two green triangles", counted, 0)
    assert not cap.describes("a green triangle", counted, 0)


def test_every_scene_is_described_by_its_own_caption():
    captions = ["a red circle", "two blue squares", "three white triangles", "a purple triangle below a red circle",
                "a yellow circle right of a green square"]
    _, objects = render(captions * 20, seed=3)
    assert all(cap.describes(c, objects, i) for i, c in enumerate(captions * 20))


def test_scores_per_kind_and_held_out():
    truths = ["a red circle", "two blue squares", "a purple triangle", "a red circle left of a blue square"]
    _, objects = render(truths, seed=1)
    predicted = ["a red circle", "three blue squares", "a purple triangle", "a blue square right of a red circle"]
    s = cap.caption_accuracy(predicted, objects, truths)
    assert s.overall == 0.75 and s.overall_held_out == 1.0 and s.overall_seen == pytest.approx(2 / 3)
    assert s.accuracy == {"single": 1.0, "count": 0.0, "relation": 1.0} and s.held_out_accuracy == {"single": 1.0}
    with pytest.raises(ValueError, match="3 predicted captions, 4 true ones and 4 scenes"):
        cap.caption_accuracy(predicted[:3], objects, truths)


def test_distractors_do_not_describe_the_scene():
    rng = np.random.default_rng(0)
    truths = ["a red circle", "two blue squares", "a red circle left of a blue square"]
    _, objects = render(truths, seed=2)
    for i, truth in enumerate(truths):
        ds = cap.distractors(truth, objects, i, 9, rng)
        assert len(set(ds)) == 9
        assert all(parse_caption(d).kind == parse_caption(truth).kind and not cap.describes(d, objects, i)
                   for d in ds)
    both = scene("a red circle left of a blue square", cx=[6.0, 24.0], cy=[6.0, 24.0])
    assert "a red circle above a blue square" not in cap.distractors("a red circle left of a blue square", both, 0,
                                                                      1000, rng)
    with pytest.raises(ValueError, match="only 17 captions do not describe it"):
        cap.distractors("a red circle", objects, 0, 18, rng)
