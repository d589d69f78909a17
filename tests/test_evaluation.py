"""Sample-quality metrics (FID, IS, precision/recall), feature extractors and the reference-stat cache."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from ar_jax.data.sources import digits
from ar_jax.evaluation import features as feats
from ar_jax.evaluation import metrics


def gaussian(n: int, dim: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """`[n, dim]` correlated Gaussian samples, mean `shift`, from a fixed random mixing matrix."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(100).normal(size=(dim, dim)) / np.sqrt(dim) + np.eye(dim)
    return rng.normal(size=(n, dim)) @ mix * scale + shift


@pytest.fixture(scope="module")
def data():
    return digits()


@pytest.fixture(scope="module")
def classifier(data):
    return feats.train_classifier(data.train_images, data.train_labels, data.num_classes, seed=0)


# --- Fréchet distance ---------------------------------------------------------------------------------


def test_frechet_distance_matches_direct_scipy():
    a, b = gaussian(600, 16, seed=1), gaussian(500, 16, seed=2, shift=0.3, scale=1.5)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr sqrtm(s1 s2) = tr sqrtm(r s2 r) with r = sqrtm(s1): a symmetric route, independent of the product
    r = linalg.sqrtm(s1).real
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(r @ s2 @ r).real)
    got = metrics.fid_from_features(a, b)
    assert got > 1.0
    assert abs(got - direct) <= 1e-6 * abs(direct)


def test_frechet_distance_is_zero_for_identical_sets():
    a = gaussian(1000, 64, seed=3)
    assert abs(metrics.fid_from_features(a, a)) <= 1e-6
    assert metrics.fid_from_features(a, a + 0.5) == pytest.approx(64 * 0.25, rel=1e-6)  # |shift|^2 only


def test_frechet_distance_is_finite_for_singular_covariances():
    a, b = gaussian(5, 16, seed=4), gaussian(5, 16, seed=5)  # rank-4 covariances in 16 dims
    d = metrics.fid_from_features(a, b)
    assert np.isfinite(d) and d > 0


def test_frechet_distance_retries_with_eps_when_the_root_is_not_finite(monkeypatch):
    a, b = gaussian(300, 6, seed=4), gaussian(300, 6, seed=5, shift=1.0)
    (mu1, s1), (mu2, s2) = metrics.feature_stats(a), metrics.feature_stats(b)
    eps, calls, real_sqrtm = 1e-2, [], linalg.sqrtm

    def flaky_sqrtm(x, *args, **kw):  # the first root fails, as it can for a singular product
        calls.append(x)
        return np.full_like(x, np.nan) if len(calls) == 1 else real_sqrtm(x, *args, **kw)

    monkeypatch.setattr(metrics.linalg, "sqrtm", flaky_sqrtm)
    with pytest.warns(UserWarning, match="singular product"):
        d = metrics.frechet_distance(mu1, s1, mu2, s2, eps=eps)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (s1 + eps * np.eye(6)) @ (s2 + eps * np.eye(6)))
    offset_root = real_sqrtm((s1 + eps * np.eye(6)) @ (s2 + eps * np.eye(6))).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(offset_root)
    assert d == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_refuses_different_feature_sizes():
    with pytest.raises(ValueError, match="same feature extractor"):
        metrics.fid_from_features(gaussian(50, 4, 0), gaussian(50, 5, 0))


# --- Inception Score ----------------------------------------------------------------------------------


def test_inception_score_is_one_for_a_constant_prediction():
    probs = np.tile([0.2, 0.5, 0.3], (200, 1))
    assert metrics.inception_score(probs) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("num_classes", [2, 10])
def test_inception_score_is_num_classes_for_confident_balanced_predictions(num_classes):
    probs = np.eye(num_classes)[np.arange(num_classes * 10 * 7) % num_classes]  # one-hot, balanced per split
    assert metrics.inception_score(probs) == pytest.approx(num_classes, rel=1e-12)
    by_class = probs[np.argsort(probs.argmax(1), kind="stable")]  # sorted by class: p(y) differs per split
    assert metrics.inception_score(by_class, num_splits=1) == pytest.approx(num_classes, rel=1e-12)
    assert metrics.inception_score(by_class) == pytest.approx(1.0, abs=1e-12)  # each split holds one class


def test_inception_score_refuses_logits():
    with pytest.raises(ValueError, match="softmax"):
        metrics.inception_score(np.random.default_rng(0).normal(size=(100, 10)))


# --- precision / recall -------------------------------------------------------------------------------


def test_precision_recall_are_one_for_identical_sets():
    a = gaussian(400, 8, seed=6)
    assert metrics.precision_recall(a, a) == (1.0, 1.0)


def test_precision_recall_fall_as_the_sets_separate():
    real, fake = gaussian(500, 8, seed=7), gaussian(500, 8, seed=8)
    prs = np.array([metrics.precision_recall(real, fake + s) for s in (0.0, 0.5, 1.0, 2.0, 4.0)])  # [5, 2]
    assert (prs[0] > 0.6).all()  # same distribution, different draws: mostly inside each other's manifold
    assert (np.diff(prs, axis=0) <= 0).all() and (prs[-1] < 0.05).all()
    assert (prs[1:] < prs[0]).all()


def test_recall_falls_when_samples_collapse():
    real = gaussian(500, 8, seed=9)
    collapsed = gaussian(500, 8, seed=10, scale=0.2)  # mode collapse: inside the real manifold, covers little
    precision, recall = metrics.precision_recall(real, collapsed)
    assert precision > 0.9 and recall < 0.3


# --- feature extractors -------------------------------------------------------------------------------


def test_classifier_is_deterministic_and_accurate(data, classifier):
    again = feats.train_classifier(data.train_images, data.train_labels, data.num_classes, seed=0)
    assert feats.weights_hash(again) == feats.weights_hash(classifier)
    ex = feats.mlp_extractor(classifier)
    (f1, l1), (f2, l2) = ex(data.test_images), ex(data.test_images[:100])
    np.testing.assert_array_equal(l1[:100], l2)
    assert f1.shape == (297, 64) and l1.shape == (297, 10)
    np.testing.assert_array_equal(f1[:100], f2)  # padded batches do not change features
    np.testing.assert_array_equal(l1, ex(data.test_images)[1])
    assert feats.classifier_accuracy(ex, data.test_images, data.test_labels) > 0.9
    assert (f1.std(0) > 0).all()  # no dead features: covariances stay full rank


def test_npz_weights_file_round_trip(tmp_path, data):
    rng = np.random.default_rng(0)
    params = {"layer_0": {"kernel": rng.normal(size=(64, 12)) / 8, "bias": np.zeros(12)},
              "layer_1": {"kernel": rng.normal(size=(12, 3)), "bias": np.ones(3)}}
    feats.save_npz(params, tmp_path / "net.npz")
    loaded, direct = feats.load_npz(tmp_path / "net.npz"), feats.mlp_extractor(params)
    assert loaded.key == direct.key
    f, logits = loaded(data.test_images)
    assert f.shape == (297, 12) and logits.shape == (297, 3)
    np.testing.assert_array_equal(f, direct(data.test_images)[0])
    with pytest.raises(ValueError, match="images of 64 values"):
        loaded(np.zeros((2, 4, 4, 1), np.uint8))


def test_callable_extractor_without_logits(data):
    ex = feats.from_callable(lambda x: x.reshape(len(x), -1)[:, :5].astype(np.float32), key="first5", batch_size=64)
    f, logits = ex(data.test_images)
    assert logits is None and f.shape == (297, 5)
    np.testing.assert_array_equal(f, data.test_images.reshape(297, -1)[:, :5])
    with pytest.raises(ValueError, match="key"):
        feats.from_callable(lambda x: x, key="")


# --- reference statistics cache -----------------------------------------------------------------------


def test_reference_stats_are_cached_once_and_reused(tmp_path, data):
    calls = []

    def net(images):
        calls.append(len(images))
        x = images.reshape(len(images), -1).astype(np.float32)
        return x[:, ::4], x[:, :3]

    ex = feats.from_callable(net, key="counting-net")
    first = feats.reference_stats(ex, data.train_images, "digits/train", cache_dir=tmp_path)
    (path,) = tmp_path.glob("digits_train-*.npz")
    mtime, n_calls = path.stat().st_mtime_ns, len(calls)
    second = feats.reference_stats(ex, data.train_images, "digits/train", cache_dir=tmp_path)
    assert len(calls) == n_calls > 0 and path.stat().st_mtime_ns == mtime
    for a, b in [(first.mu, second.mu), (first.sigma, second.sigma), (first.features, second.features),
                 (first.logits, second.logits)]:
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(first.mu, data.train_images.reshape(1500, -1)[:, ::4].mean(0), rtol=1e-6)
    # another split or another network is another entry
    feats.reference_stats(ex, data.test_images, "digits/test", cache_dir=tmp_path)
    feats.reference_stats(feats.from_callable(net, key="other-net"), data.train_images, "digits/train",
                          cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 3 and len(calls) > n_calls


# --- the benchmark's scoring, with real images standing in for samples -----------------------------------


class RealImagePipe:
    """Stands in for `ar_jax.load(...)`: `sample(labels)` returns real test digits of those classes."""

    def __init__(self, data):
        self.data, self.params = data, None
        self.config = type("C", (), {"data": type("D", (), {"num_classes": data.num_classes})})()

    def sample(self, labels, seed=0):
        rng = np.random.default_rng(seed)
        return np.stack([self.data.test_images[rng.choice(np.flatnonzero(self.data.test_labels == y))]
                         for y in labels])


def test_sample_quality_of_real_images_is_near_the_floor(tmp_path, data, classifier):
    from benchmarks.sample_quality import sample_quality

    ex = feats.mlp_extractor(classifier)
    r = sample_quality(RealImagePipe(data), data, "digits", num_samples=300, extractor=ex, cache_dir=tmp_path)
    s, floor = r["samples"], r["real_test"]
    assert s["n"] == 300 and floor["n"] == 297 and r["extractor"] == ex.key
    assert s["fid"] < 2 * floor["fid"] and s["precision"] > 0.7 and s["inception_score"] > 7
    assert r["class_consistency"] > 0.9
    noise = RealImagePipe(data)
    noise.sample = lambda labels, seed=0: np.random.default_rng(seed).integers(0, 256, (len(labels), 8, 8, 1),
                                                                               dtype=np.uint8)
    bad = sample_quality(noise, data, "digits", num_samples=300, extractor=ex, cache_dir=tmp_path)["samples"]
    assert bad["fid"] > 10 * floor["fid"] and bad["precision"] < 0.1
