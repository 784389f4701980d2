"""Sample-quality metrics between a real and a generated feature set (pure functions of (N, d)
feature arrays).

- KID (Bińkowski et al. 2018): the unbiased estimate of MMD² with the cubic polynomial kernel
  k(x, y) = (xᵀy / d + 1)³ over all n·m pairs (not the mean over random subsets that other tools
  report: the same expectation, less variance), with its jackknife standard error.
- Precision / recall (Kynkäänniemi et al. 2019): each set's manifold is the union of balls around
  its points with radius the distance to the point's k-th nearest neighbour in the same set;
  precision is the fraction of generated points inside the real manifold, recall the fraction of
  real points inside the generated one.
- Density / coverage (Naeem et al. 2020): density = (1 / kM) Σ_j Σ_i 1[y_j ∈ B(x_i, NND_k(x_i))]
  (can exceed 1), coverage = (1 / N) Σ_i 1[∃ j: y_j ∈ B(x_i, NND_k(x_i))], with real x_i (N) and
  generated y_j (M).
- Inception Score analogue (Salimans et al. 2016): exp(E_x KL(p(y|x) ‖ p(y))) from any classifier's
  logits, mean and sd over splits; with the project's evaluators it is bounded by the class count.
"""

from dataclasses import dataclass

import numpy as np
import torch

CHUNK = 2048  # rows per block of a pairwise computation: bounds memory at CHUNK × N floats


def _as_tensor(features: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(features), dtype=torch.float64)


def _kernel_sums(a: torch.Tensor, b: torch.Tensor, same: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Row sums (len a,) and column sums (len b,) of the kernel matrix k(a_i, b_j), its diagonal
    left out when `same` (a is b)."""
    d = a.shape[1]
    rows, cols = [], torch.zeros(len(b), dtype=torch.float64)
    for start in range(0, len(a), CHUNK):
        block = (a[start:start + CHUNK] @ b.T / d + 1.0) ** 3
        if same:
            index = torch.arange(block.shape[0])
            block[index, index + start] = 0.0
        rows.append(block.sum(1))
        cols += block.sum(0)
    return torch.cat(rows), cols


@dataclass(frozen=True)
class KID:
    value: float  # the unbiased MMD² over all pairs
    stderr: float  # its two-sample delete-one jackknife standard error (Arvesen 1969)


def kernel_row_sums(real: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N,) row sums of the KID kernel matrix of a set with itself, diagonal left out: the part of
    `kernel_inception_distance` that depends on the real set alone (compute once, pass to every
    comparison)."""
    x = _as_tensor(real)
    return _kernel_sums(x, x, True)[0]


def kernel_inception_distance(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor,
                              real_row_sums: torch.Tensor | None = None) -> KID:
    """KID of (N, d) and (M, d) feature sets, N, M ≥ 3: the unbiased MMD² (Gretton et al. 2012, Eq.
    3)

        K_xx / (N(N−1)) + K_yy / (M(M−1)) − 2 K_xy / (NM),   K_·· = Σ over pairs (i ≠ j within a set),

    and its jackknife standard error: every leave-one-out estimate follows from the kernel matrices'
    row sums, so it costs no more than the estimate (N·M pairs, in blocks). `real_row_sums`:
    `kernel_row_sums(real)`, if known."""
    x, y = _as_tensor(real), _as_tensor(fake)
    n, m = len(x), len(y)
    r_xx = kernel_row_sums(x) if real_row_sums is None else real_row_sums
    r_yy, _ = _kernel_sums(y, y, True)
    r_xy, c_xy = _kernel_sums(x, y, False)
    k_xx, k_yy, k_xy = r_xx.sum(), r_yy.sum(), r_xy.sum()

    def mmd2(kxx, kyy, kxy, n_, m_):
        return kxx / (n_ * (n_ - 1)) + kyy / (m_ * (m_ - 1)) - 2.0 * kxy / (n_ * m_)

    without_x = mmd2(k_xx - 2 * r_xx, k_yy, k_xy - r_xy, n - 1, m)  # (N,) estimates leaving out x_i
    without_y = mmd2(k_xx, k_yy - 2 * r_yy, k_xy - c_xy, n, m - 1)  # (M,) leaving out y_j
    variance = ((n - 1) / n * (without_x - without_x.mean()).pow(2).sum()
                + (m - 1) / m * (without_y - without_y.mean()).pow(2).sum())
    return KID(float(mmd2(k_xx, k_yy, k_xy, n, m)), float(variance.sqrt()))


def neighbour_radii(x: np.ndarray | torch.Tensor, ks: tuple[int, ...]) -> list[torch.Tensor]:
    """For each k in ks, the (N,) distance of every point of x to its k-th nearest neighbour in x
    (itself excluded); one pass over the pairwise distances."""
    x = _as_tensor(x)
    radii = []
    for start in range(0, len(x), CHUNK):
        nearest = torch.cdist(x[start:start + CHUNK], x).topk(max(ks) + 1, dim=1, largest=False).values
        radii.append(nearest[:, list(ks)])  # column 0 is the point itself (distance 0)
    return list(torch.cat(radii).T)


@dataclass(frozen=True)
class Manifold:
    precision: float
    recall: float
    density: float
    coverage: float


def manifold_metrics(real: np.ndarray | torch.Tensor,
                     fake: np.ndarray | torch.Tensor, k_pr: int = 3,
                     k_dc: int = 5,
                     real_radii: tuple[torch.Tensor, torch.Tensor] | None = None) -> Manifold:
    """Precision/recall with k = k_pr (Kynkäänniemi: 3) and density/coverage with k = k_dc
    (Naeem: 5).

    `real_radii`: `neighbour_radii(real, (k_pr, k_dc))`, if known (it depends on the real set
    alone). The generated-vs-real distances are computed once and serve all four metrics."""
    x, y = _as_tensor(real), _as_tensor(fake)
    radius_pr, radius_dc = real_radii if real_radii is not None else neighbour_radii(x, (k_pr, k_dc))
    (fake_radius,) = neighbour_radii(y, (k_pr,))
    precise, inside_dc = 0, 0
    covered, recalled = torch.zeros(len(x), dtype=torch.bool), torch.zeros(len(x), dtype=torch.bool)
    for start in range(0, len(y), CHUNK):
        distances = torch.cdist(y[start:start + CHUNK], x)  # (chunk, N)
        precise += int((distances <= radius_pr[None]).any(1).sum())
        in_dc = distances <= radius_dc[None]
        inside_dc += int(in_dc.sum())
        covered |= in_dc.any(0)
        recalled |= (distances <= fake_radius[start:start + CHUNK, None]).any(0)
    return Manifold(precision=precise / len(y), recall=float(recalled.double().mean()),
                    density=inside_dc / (k_dc * len(y)), coverage=float(covered.double().mean()))


def inception_score(logits: np.ndarray | torch.Tensor, splits: int = 10,
                    seed: int | None = 0) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) ‖ p(y))) from (N, classes) logits → (mean, sd) over `splits` equal parts of
    the images in an order shuffled with `seed` (as torch-fidelity does): a set stored in class
    order would otherwise put a few classes in each part, and its p(y) there, which lowers the score
    (emoji held-out: 2.68 ordered, 7.79 shuffled). `seed` None: the parts in the given order."""
    log_p = torch.log_softmax(_as_tensor(logits), dim=1)
    if seed is not None:
        log_p = log_p[torch.randperm(len(log_p), generator=torch.Generator().manual_seed(seed))]
    scores = []
    for part in log_p.tensor_split(max(1, min(splits, len(log_p)))):
        log_marginal = torch.logsumexp(part, 0) - np.log(len(part))
        kl = (part.exp() * (part - log_marginal)).sum(1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores)), float(np.std(scores))
