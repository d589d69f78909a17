"""Caption evaluation on the scenes: exact-scene comparison (a relation from either object), scores, distractors."""

import numpy as np
import pytest

from ar_jax.data.scenes import parse_caption
from ar_jax.evaluation import captions as cap


@pytest.mark.parametrize("predicted,truth,same", [
    ("a red circle left of a blue square", "a blue square right of a red circle", True),
    ("a red circle above a blue square", "a blue square below a red circle", True),
    ("A  Red circle", "a red circle", True),
    ("a red circle left of a blue square", "a blue square left of a red circle", False),
    ("a red circle left of a blue square", "a red circle above a blue square", False),
    ("two red circles", "three red circles", False),
    ("two red circles", "two red squares", False),
    ("a red circle", "a red square", False),
    ("a red circle", "two red circles", False),
    ("a red circle above", "a red circle", False),  # not a scenes caption: describes nothing
    ("", "a red circle", False),
])
def test_same_scene(predicted, truth, same):
    assert cap.same_scene(predicted, truth) is same


def test_scores_per_kind_and_held_out():
    truths = ["a red circle", "two blue squares", "a purple triangle", "a red circle left of a blue square"]
    predicted = ["a red circle", "three blue squares", "a purple triangle", "a blue square right of a red circle"]
    s = cap.caption_accuracy(predicted, truths)
    assert s.overall == 0.75 and s.overall_held_out == 1.0 and s.overall_seen == pytest.approx(2 / 3)
    assert s.accuracy == {"single": 1.0, "count": 0.0, "relation": 1.0} and s.held_out_accuracy == {"single": 1.0}
    with pytest.raises(ValueError, match="3 predicted captions but 4 true ones"):
        cap.caption_accuracy(predicted[:3], truths)


def test_distractors_are_other_scenes_of_the_same_kind():
    rng = np.random.default_rng(0)
    for truth in ("a red circle", "two blue squares", "a red circle left of a blue square"):
        ds = cap.distractors(truth, 9, rng)
        assert len(set(ds)) == 9
        assert all(parse_caption(d).kind == parse_caption(truth).kind and not cap.same_scene(d, truth) for d in ds)
    assert "a blue square right of a red circle" not in cap.distractors("a red circle left of a blue square", 1000,
                                                                         rng)
    with pytest.raises(ValueError, match="only 17 other scenes"):
        cap.distractors("a red circle", 18, rng)
