"""Sample-quality metrics from feature and class-probability arrays: FID, Inception Score, precision/recall.

The formulas are those of OpenAI's ADM evaluation suite (guided-diffusion `evaluations/evaluator.py`), so
numbers computed here on Inception features would match theirs; with our own classifier's features
(`ar_jax.evaluation.features`) they are comparable between our runs only, never with published figures.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

PR_NEIGHBOURS = 3  # k of the k-NN manifolds (Kynkäänniemi et al. 2019; ADM's nhood_sizes=(3,))


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean `[D]` and covariance `[D, D]` (unbiased, `np.cov(rowvar=False)`) of `features [N, D]`."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be [N, D] with N >= 2, got shape {features.shape}.")
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians N(mu1 `[D]`, sigma1 `[D, D]`) and N(mu2, sigma2).

    |mu1 - mu2|^2 + tr(s1 + s2 - 2 sqrtm(s1 s2)). When sqrtm of the product is not finite (singular
    covariances, e.g. fewer samples than dimensions), `eps * I` is added to both and it is retried;
    an imaginary part above 1e-3 on the diagonal of the root is an error, a smaller one is dropped.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics of different feature sizes: mu {mu1.shape} vs {mu2.shape}, sigma "
                         f"{sigma1.shape} vs {sigma2.shape}; compute both with the same feature extractor.")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # ADM's disp=False: a singular product is handled below, not reported
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(f"fid calculation produces singular product; adding {eps} to diagonal of cov estimates",
                      stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm(sigma1 sigma2) has an imaginary component {np.max(np.abs(covmean.imag))}; "
                             "the covariances are ill-conditioned (more samples, or fewer feature dimensions).")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to `features1 [N1, D]` and `features2 [N2, D]`."""
    return frechet_distance(*feature_stats(features1), *feature_stats(features2))


def inception_score(probs: np.ndarray, num_splits: int = 10) -> float:
    """exp(E_x KL(p(y|x) || p(y))) of class probabilities `probs [N, C]`, the mean over `num_splits` splits.

    Splits are contiguous chunks (`np.array_split`), p(y) the mean within each split: interleave or
    shuffle inputs that are sorted by class. 0 log 0 counts as 0, so one-hot rows are allowed.
    Pass `scipy.special.softmax(logits, axis=-1)` for logits.
    """
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[0] < num_splits:
        raise ValueError(f"probs must be [N, C] with N >= num_splits={num_splits}, got shape {probs.shape}.")
    if (probs < 0).any() or not np.allclose(probs.sum(1), 1.0, atol=1e-4):
        raise ValueError("probs rows must be probability vectors (non-negative, summing to 1); pass "
                         "scipy.special.softmax(logits, axis=-1), not logits.")
    scores = []
    for part in np.array_split(probs, num_splits):
        marginal = part.mean(0, keepdims=True)  # [1, C]; > 0 wherever part > 0
        kl = _xlogy(part, part) - _xlogy(part, np.broadcast_to(marginal, part.shape))
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores))


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x * log(y), 0 where x == 0."""
    out = np.zeros_like(x)
    nz = x > 0
    out[nz] = x[nz] * np.log(y[nz])
    return out


def pairwise_sq_distances(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances `[N, M]` between rows of `u [N, D]` and `v [M, D]`, clipped at 0.

    float32, like ADM's fallback path (ADM tries float16 first; we do not, so ties at the radius may
    differ from theirs in the last bits).
    """
    u, v = np.asarray(u, np.float32), np.asarray(v, np.float32)
    d = (u * u).sum(1)[:, None] - 2 * u @ v.T + (v * v).sum(1)[None, :]
    return np.maximum(d, 0.0)


def manifold_radii(features: np.ndarray, k: int = PR_NEIGHBOURS, block: int = 4096) -> np.ndarray:
    """Squared distance `[N]` from each row of `features [N, D]` to its k-th nearest neighbour in the set.

    Self-distance (0) is entry 0 of each sorted row, so entry k is the k-th neighbour other than itself.
    """
    n = features.shape[0]
    if n <= k:
        raise ValueError(f"need more than k={k} feature vectors to estimate a manifold, got {n}.")
    radii = np.empty(n, np.float32)
    for i in range(0, n, block):
        d = pairwise_sq_distances(features[i:i + block], features)  # [b, N]
        radii[i:i + block] = np.partition(d, k, axis=1)[:, k]
    return radii


def _inside(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, block: int = 4096) -> np.ndarray:
    """bool `[N]`: row i of `points [N, D]` lies within radius of some row of `centres [M, D]` (`radii [M]`)."""
    out = np.empty(points.shape[0], bool)
    for i in range(0, points.shape[0], block):
        out[i:i + block] = (pairwise_sq_distances(points[i:i + block], centres) <= radii[None, :]).any(1)
    return out


def precision_recall(real_features: np.ndarray, fake_features: np.ndarray,
                     k: int = PR_NEIGHBOURS) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of `fake [N2, D]` against `real [N1, D]`.

    Each set's manifold is the union of balls around its points, radius = distance to the k-th nearest
    neighbour within the set. Precision: fraction of fake points inside the real manifold; recall:
    fraction of real points inside the fake manifold.
    """
    real = np.asarray(real_features, np.float32)
    fake = np.asarray(fake_features, np.float32)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be [N, D] with the same D, got {real.shape} and {fake.shape}.")
    precision = _inside(fake, real, manifold_radii(real, k)).mean()
    recall = _inside(real, fake, manifold_radii(fake, k)).mean()
    return float(precision), float(recall)
