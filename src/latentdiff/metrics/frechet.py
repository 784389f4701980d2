"""Fréchet distance between Gaussians fitted to features (Heusel et al. 2017; FID when the features
are Inception's).

FD = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½). It is biased upwards at small n: compare only numbers
computed at the same sample count, and always beside a real-vs-real baseline.
"""

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch


@dataclass(frozen=True)
class FeatureStats:
    """Mean (d,) and covariance (d, d) of n feature vectors, float64."""

    mean: np.ndarray
    cov: np.ndarray
    n: int

    @classmethod
    def of(cls, features: torch.Tensor | np.ndarray) -> "FeatureStats":
        f = np.asarray(features, dtype=np.float64)
        return cls(f.mean(0), np.cov(f, rowvar=False), len(f))


def frechet_distance(a: FeatureStats, b: FeatureStats, eps: float = 1e-6) -> float:
    covmean, _ = scipy.linalg.sqrtm(a.cov @ b.cov, disp=False)
    # singular product: regularise both covariances (as pytorch-fid)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(a.cov)) * eps
        covmean = scipy.linalg.sqrtm((a.cov + offset) @ (b.cov + offset))
    covmean = covmean.real
    diff = a.mean - b.mean
    return float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2 * np.trace(covmean))
