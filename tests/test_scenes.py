"""The captioned scenes source: determinism, the fixed test split, the spec of every image, held-out combinations."""

import ml_collections
import numpy as np
import pytest

from ar_jax.data import scenes
from ar_jax.data.scenes import COLORS, RELATIONS, SHAPES, all_captions, generate, parse_caption, scenes_dataset
from ar_jax.data.shapes import shapes_dataset
from ar_jax.data.sources import get_dataset

HELD_OUT = ("purple triangle", "yellow circle")


@pytest.fixture(scope="module", params=[32, 48])
def drawn(request):
    size = request.param
    images, captions, objects = generate(1500, seed=11, size=size, held_out=HELD_OUT)
    return size, images, captions, objects


def config(**overrides) -> ml_collections.ConfigDict:
    c = dict(name="scenes", num_train=300, num_test=100, seed=0, image_size=32, held_out=list(HELD_OUT),
             kind_weights=(1.0, 1.0, 1.0))
    c.update(overrides)
    return ml_collections.ConfigDict(c)


def test_deterministic_from_the_seed_and_the_test_split_is_fixed():
    a, b = scenes_dataset(300, 100, seed=2), scenes_dataset(300, 100, seed=2)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    assert a.train_captions == b.train_captions and a.test_captions == b.test_captions
    other = scenes_dataset(40, 100, seed=2, held_out=("red square",))  # neither num_train nor held_out moves it
    np.testing.assert_array_equal(other.test_images, a.test_images)
    assert other.test_captions == a.test_captions
    assert not np.array_equal(scenes_dataset(40, 100, seed=3).test_images, a.test_images)
    assert not np.array_equal(a.train_images[:100], a.test_images)  # disjoint streams


def test_dataset_shapes_and_registered_source():
    d = get_dataset(config())
    assert d.train_images.shape == (300, 32, 32, 3) and d.train_images.dtype == np.uint8
    assert d.test_images.shape == (100, 32, 32, 3) and len(d.test_captions) == 100
    assert d.num_classes == 0 and not d.train_labels.any() and d.train_labels.dtype == np.int32
    assert get_dataset(config(image_size=64)).image_shape == (64, 64, 3)
    with pytest.raises(ValueError, match="config.data.held_out"):
        get_dataset(ml_collections.ConfigDict({k: v for k, v in config().items() if k != "held_out"}))
    with pytest.raises(ValueError, match="'pink triangle'"):
        get_dataset(config(held_out=["pink triangle"]))
    with pytest.raises(ValueError, match="image_size=16"):
        get_dataset(config(image_size=16))
    assert shapes_dataset(5, 5).train_captions is None  # uncaptioned sources are unchanged


def test_captions_follow_the_grammar_and_name_every_object(drawn):
    _, _, captions, objects = drawn
    kinds = []
    for i, text in enumerate(captions):
        cap = parse_caption(text)
        assert cap.text == text
        kinds.append(cap.kind)
        assert len(cap.objects) == objects.count[i]
        assert [(list(COLORS)[c], SHAPES[s]) for c, s in zip(objects.color[i], objects.shape[i]) if s >= 0] \
            == list(cap.objects)
        if cap.kind == "relation":
            assert cap.objects[0][0] != cap.objects[1][0] and RELATIONS[objects.relation[i]] == cap.relation
    share = {k: kinds.count(k) / len(kinds) for k in scenes.KINDS}
    assert all(0.28 < v < 0.39 for v in share.values()), share


def test_pixels_background_and_colours_within_the_spec(drawn):
    _, images, _, objects = drawn
    palette = np.array(list(COLORS.values()))
    for i, image in enumerate(images[:400]):
        colours, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
        background = colours[counts.argmax()]
        assert background.max() <= 40
        n = objects.count[i]
        rgb = objects.rgb[i, :n].astype(int)
        assert np.abs(rgb - palette[objects.color[i, :n]]).max() <= 15
        others = {tuple(c) for c in colours} - {tuple(background)}
        assert others <= {tuple(c) for c in rgb}  # every other pixel is one of the objects' colours
        for j in range(n):  # the centre pixel carries the object's colour
            np.testing.assert_array_equal(image[round(objects.cy[i, j]), round(objects.cx[i, j])], rgb[j])


def test_objects_inside_apart_and_relations_hold(drawn):
    size, _, _, o = drawn
    scale = size / 32
    present = np.arange(3)[None] < o.count[:, None]
    h = o.half[present]
    assert h.min() >= 5 * scale - 1e-4 and h.max() <= 7 * scale + 1e-4
    for c in (o.cx[present], o.cy[present]):
        assert (c - h >= -1e-4).all() and (c + h <= size - 1 + 1e-4).all()
    for i, j in ((0, 1), (0, 2), (1, 2)):
        both = present[:, i] & present[:, j]
        dist = np.maximum(np.abs(o.cx[:, i] - o.cx[:, j]), np.abs(o.cy[:, i] - o.cy[:, j]))
        gap = np.maximum(np.abs(o.cx[:, i] - o.cx[:, j]) - o.half[:, i] - o.half[:, j],
                         np.abs(o.cy[:, i] - o.cy[:, j]) - o.half[:, i] - o.half[:, j])
        assert (gap[both] >= 2 * scale - 1e-4).all() and (dist[both] > 0).all()
    rel = o.relation >= 0
    assert rel.sum() > 300
    need = o.half[rel, 0] + o.half[rel, 1]  # first-named object (slot 0) relative to the second (slot 1)
    dx, dy = o.cx[rel, 1] - o.cx[rel, 0], o.cy[rel, 1] - o.cy[rel, 0]
    along = np.select([o.relation[rel] == k for k in range(4)], [dx, -dx, dy, -dy])
    assert (along >= need - 1e-4).all()


def test_held_out_combinations_never_in_train_but_in_test():
    d = scenes_dataset(3000, 600, seed=0, held_out=HELD_OUT)
    held = {tuple(h.split()) for h in HELD_OUT}
    named = lambda caps: {o for c in caps for o in parse_caption(c).objects}
    assert not named(d.train_captions) & held
    assert named(d.test_captions) >= held
    _, caps, objects = generate(2000, seed=1, held_out=HELD_OUT)
    pairs = {(list(COLORS)[c], SHAPES[s]) for c, s in zip(objects.color.ravel(), objects.shape.ravel()) if s >= 0}
    assert not pairs & held and len(pairs) == 16


def test_kind_weights_and_render_for_given_captions():
    _, caps, _ = generate(200, seed=0, kind_weights=(0, 0, 1))
    assert all(parse_caption(c).kind == "relation" for c in caps)
    with pytest.raises(ValueError, match="kind_weights"):
        generate(5, seed=0, kind_weights=(1, 1))
    wanted = ["three purple triangles", "a white square below a red circle", "a yellow circle"]
    images, objects = scenes.render(wanted, seed=0, size=40)
    assert images.shape == (3, 40, 40, 3) and list(objects.count) == [3, 2, 1]


def test_caption_grammar_round_trips_and_refuses_other_text():
    captions = all_captions()
    assert len(captions) == len(set(captions)) == 18 + 36 + 18 * 15 * 4
    for text in captions:
        assert parse_caption(text).text == text
    assert parse_caption("  Two RED  squares ").text == "two red squares"
    for bad in ("a red circle left of a red square", "a pink circle", "two red circle", "four red circles",
                "a red circle next to a blue square", ""):
        with pytest.raises(ValueError, match="not a scenes caption"):
            parse_caption(bad)
