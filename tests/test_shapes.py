"""The procedural shapes source: shapes and dtypes, determinism, and an independent judge of its classes."""

import ml_collections
import numpy as np
import pytest

from ar_jax.data.shapes import CLASSES, blur_and_noise, classify, shape_classifier, shapes_dataset
from ar_jax.data.sources import get_dataset


@pytest.fixture(scope="module")
def shapes():
    return shapes_dataset(num_train=1000, num_test=200, seed=3)


def test_shapes_and_dtypes(shapes):
    assert shapes.train_images.shape == (1000, 32, 32, 3) and shapes.train_images.dtype == np.uint8
    assert shapes.test_images.shape == (200, 32, 32, 3) and shapes.test_labels.dtype == np.int32
    assert shapes.num_classes == len(CLASSES)
    assert set(np.unique(shapes.train_labels)) == set(range(len(CLASSES)))
    assert shapes.train_images.std() > 20  # not blank


def test_deterministic_and_fixed_test_split(shapes):
    again = shapes_dataset(num_train=1000, num_test=200, seed=3)
    np.testing.assert_array_equal(again.train_images, shapes.train_images)
    np.testing.assert_array_equal(again.test_labels, shapes.test_labels)
    other_train = shapes_dataset(num_train=50, num_test=200, seed=3)  # the test split does not move with num_train
    np.testing.assert_array_equal(other_train.test_images, shapes.test_images)
    assert not np.array_equal(shapes_dataset(10, 200, seed=4).test_images, shapes.test_images)


def test_registered_source_reads_its_fields():
    c = ml_collections.ConfigDict({"name": "shapes", "num_train": 20, "num_test": 10, "seed": 0})
    d = get_dataset(c)
    assert d.train_images.shape == (20, 32, 32, 3) and d.test_images.shape == (10, 32, 32, 3)
    with pytest.raises(ValueError, match="config.data.num_train"):
        get_dataset(ml_collections.ConfigDict({"name": "shapes", "num_test": 10, "seed": 0}))


def test_independent_classifier_tells_classes_apart(shapes):
    clf = shape_classifier(shapes)
    accuracy = (classify(clf, shapes.test_images) == shapes.test_labels).mean()
    assert accuracy > 0.9, accuracy
    soft = blur_and_noise(shapes.test_images, np.random.default_rng(1))  # robust to soft edges and noise
    assert (classify(clf, soft) == shapes.test_labels).mean() > 0.9
