"""The scenes judge: agreement with the generator, near zero on shuffled captions, the tasks, and the evaluation."""

import numpy as np
import pytest

from ar_jax.data.scenes import all_captions, generate, render
from ar_jax.data.shapes import blur_and_noise
from ar_jax.evaluation import scenes as ev

HELD_OUT = ("purple triangle", "yellow circle")


def agreement(images, captions) -> float:
    """Fraction of images that pass every task their caption asks for."""
    return float(np.mean([all(ev.judge(x, c).values()) for x, c in zip(images, captions)]))


@pytest.mark.parametrize("size, held_out", [(32, HELD_OUT), (32, ()), (48, ())])
def test_judge_agrees_with_the_generator_and_not_with_shuffled_captions(size, held_out):
    images, captions, _ = generate(300, seed=size + len(held_out), size=size, held_out=held_out)  # train / test
    assert agreement(images, captions) >= 0.99
    shuffled = list(np.roll(captions, 1))
    assert agreement(images, shuffled) < 0.2
    s = ev.score(images, shuffled, held_out)
    assert s.overall < 0.2 and max(s.accuracy.values()) < 0.3


def test_judge_tolerates_soft_edges_and_noise():
    images, captions, _ = generate(300, seed=5)
    assert agreement(blur_and_noise(images, np.random.default_rng(0), noise=0.0), captions) >= 0.97
    assert agreement(blur_and_noise(images, np.random.default_rng(0), noise=6.0), captions) >= 0.9


def test_each_task_fails_on_its_own_mistake():
    (image,), objects = render(["a red circle left of a blue square"], seed=1)
    assert ev.judge(image, "a red circle left of a blue square") == dict(
        two_object=True, color_attribution=True, position=True)
    assert ev.judge(image, "a red circle right of a blue square") == dict(
        two_object=True, color_attribution=True, position=False)
    assert ev.judge(image, "a blue circle left of a red square") == dict(
        two_object=True, color_attribution=False, position=False)
    assert ev.judge(image, "a red triangle left of a blue square")["two_object"] is False
    assert ev.judge(image, "a red circle") == dict(single_object=False, colors=False)  # an extra object
    (one,), _ = render(["a green triangle"], seed=2)
    assert ev.judge(one, "a green triangle") == dict(single_object=True, colors=True)
    assert ev.judge(one, "a white triangle") == dict(single_object=True, colors=False)
    assert ev.judge(one, "a green square") == dict(single_object=False, colors=False)
    (three,), _ = render(["three white squares"], seed=3)
    assert ev.judge(three, "three white squares") == {"counting": True}
    assert ev.judge(three, "two white squares") == {"counting": False}
    assert ev.judge(three, "three red squares") == {"counting": False}
    assert ev.judge(np.zeros((32, 32, 3), np.uint8), "a red circle") == dict(single_object=False, colors=False)
    with pytest.raises(ValueError, match="not a scenes caption"):
        ev.judge(one, "a green hexagon")


def test_detected_objects_match_the_metadata():
    images, _, o = generate(50, seed=9, size=64)
    for i, image in enumerate(images):
        found = sorted(ev.detect_objects(image), key=lambda d: (d.cy, d.cx))
        order = sorted(range(o.count[i]), key=lambda j: (o.cy[i, j], o.cx[i, j]))
        assert len(found) == o.count[i]
        for d, j in zip(found, order):
            assert abs(d.cx - o.cx[i, j]) <= 1 and abs(d.cy - o.cy[i, j]) <= 1 and abs(d.half - o.half[i, j]) <= 1


def test_parse_caption_round_trips():
    for text in all_captions()[::7]:
        cap = ev.parse_caption(text)
        assert cap.text == text and ev.parse_caption(cap.text) == cap
        assert set(ev.judge(render([text], 0)[0][0], cap)) == set(ev.TASKS_BY_KIND[cap.kind])


def test_prompt_list_is_fixed_and_keeps_held_out_combinations_apart():
    seen, held = ev.scene_prompts(HELD_OUT)
    assert (seen, held) == ev.scene_prompts(HELD_OUT) and len(set(seen + held)) == len(seen + held)
    assert len(seen) == 16 + 32 + 32 and len(held) == 2 + 4 + 16
    pairs = [{tuple(h.split()) for h in HELD_OUT} & set(ev.parse_caption(p).objects) for p in seen + held]
    assert not any(pairs[:len(seen)]) and all(pairs[len(seen):])
    assert {ev.parse_caption(p).kind for p in held} == {"single", "count", "relation"}


def test_evaluation_scores_an_oracle_sampler_one_and_a_blank_sampler_zero():
    calls = []

    def oracle(prompts, seed):
        calls.append((len(prompts), seed))
        return render(prompts, seed)[0]

    scores = ev.evaluate(oracle, HELD_OUT, samples_per_prompt=2, batch_size=64, seed=3)
    assert scores.overall >= 0.99 and scores.held_out_overall >= 0.99
    assert set(scores.accuracy) == set(scores.held_out_accuracy) == set(ev.TASKS)
    assert scores.counts["colors"] == 2 * 16 and scores.held_out_counts["colors"] == 2 * 2
    assert calls == [(64, 300_000 + i) for i in range(4)]  # 204 samples in 4 full batches, a seed each
    blank = ev.evaluate(lambda p, s: np.zeros((len(p), 32, 32, 3), np.uint8), HELD_OUT, samples_per_prompt=1)
    assert blank.overall == 0.0 and blank.held_out_overall == 0.0
    out = blank.as_json()
    assert list(out)[:2] == ["overall", "single_object"] and out["held_out"]["position"] == 0.0
    with pytest.raises(ValueError, match="uint8 RGB"):
        ev.evaluate(lambda p, s: np.zeros((len(p), 32, 32, 3), np.float32), HELD_OUT)


def test_calibration_rows_need_no_model():
    rows = ev.calibration(HELD_OUT, samples_per_prompt=2)
    assert rows["generator"].overall >= 0.99 and rows["generator"].held_out_overall >= 0.99
    assert rows["shuffled"].overall < 0.2
