"""Feature-space metrics on Inception features: FID, KID, precision and recall.

FID is computed in float64 with the trace of sqrt(S1 S2) taken from the eigenvalues of the
symmetric matrix sqrt(S1) S2 sqrt(S1), clipped at zero: no general matrix square root, so no
"imaginary component" failure however few samples there are (few samples still bias FID upward,
hence the warning under 2,048).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

FID_MIN_SAMPLES = 2048  # below the feature dimension the covariance is rank-deficient and FID biased


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def fid(real_features: np.ndarray, fake_features: np.ndarray, real_stats=None) -> float:
    if min(len(real_features) if real_stats is None else FID_MIN_SAMPLES, len(fake_features)) < FID_MIN_SAMPLES:
        warnings.warn(f"FID from fewer than {FID_MIN_SAMPLES} samples is biased upwards; "
                      f"papers use 50,000 (CelebA 64x64 DCGAN ~12.5)", stacklevel=2)
    mu1, sigma1 = real_stats if real_stats is not None else statistics(real_features)
    mu2, sigma2 = statistics(fake_features)
    return frechet_distance(mu1, sigma1, mu2, sigma2)


def kid(real_features, fake_features, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0):
    """Kernel Inception Distance: unbiased MMD^2 with the cubic kernel (x.y/d + 1)^3; (mean, std) over subsets."""
    real = np.asarray(real_features, np.float64)
    fake = np.asarray(fake_features, np.float64)
    m = min(subset_size, len(real), len(fake))
    dim = real.shape[1]
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(num_subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = fake[rng.choice(len(fake), m, replace=False)]
        k_xx = (x @ x.T / dim + 1) ** 3
        k_yy = (y @ y.T / dim + 1) ** 3
        k_xy = (x @ y.T / dim + 1) ** 3
        scores.append((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
                      - 2 * k_xy.mean())
    return float(np.mean(scores)), float(np.std(scores))


def _kth_neighbour_radius(features: torch.Tensor, k: int, batch: int = 1024) -> torch.Tensor:
    radii = []
    for start in range(0, len(features), batch):
        distances = torch.cdist(features[start:start + batch], features)
        radii.append(distances.kthvalue(k + 1, dim=1).values)  # +1: the nearest is the point itself
    return torch.cat(radii)


def _coverage(manifold: torch.Tensor, radii: torch.Tensor, queries: torch.Tensor, batch: int = 1024) -> float:
    """Fraction of queries inside at least one manifold point's k-NN ball."""
    inside = []
    for start in range(0, len(queries), batch):
        distances = torch.cdist(queries[start:start + batch], manifold)
        inside.append((distances <= radii[None, :]).any(dim=1))
    return torch.cat(inside).float().mean().item()


def precision_recall(real_features, fake_features, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN radii."""
    real = torch.as_tensor(np.asarray(real_features), dtype=torch.float32)
    fake = torch.as_tensor(np.asarray(fake_features), dtype=torch.float32)
    precision = _coverage(real, _kth_neighbour_radius(real, k), fake)
    recall = _coverage(fake, _kth_neighbour_radius(fake, k), real)
    return precision, recall
