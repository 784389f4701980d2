"""VQ-Diffusion's training loss (Gu et al., CVPR 2022, Sec. 3.3, Eq. 8 and 12): the variational bound of
the mask-and-replace process with the reverse step reparameterised through a prediction of x_0,
plus the auxiliary cross-entropy of that prediction.

The network gives p_θ(x̃_0 | x_t, y) over the K codes of every token; the reverse step is
p_θ(x_{t−1} | x_t) = Σ_x̃0 q(x_{t−1} | x_t, x̃_0)·p_θ(x̃_0 | x_t) (`MaskReplaceSchedule.posterior`).
Per token:  L_t = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)) for t > 1, L_1 = −log p_θ(x_0 | x_1),
and L = L_t + λ·(−log p_θ(x̃_0 = x_0 | x_t)) with λ = `aux_weight` (the paper's 5e-4 on its
bound summed over tokens; here both are per-token means, so the same λ weighs the same).

`TimestepImportance` is the authors' training-time sampling of t: t ~ p(t) ∝ √E[L_t²] with the loss
reweighted by 1/(T·p(t)), an unbiased estimate of the uniform-t bound with less variance; with it the
auxiliary weight grows towards small t, λ·(2 − t/T) (their adaptive auxiliary loss).
"""

import math
from dataclasses import dataclass, field

import torch

from latentdiff.discrete_noise import MaskReplaceSchedule, onehot

TINY = 1e-30  # the floor of a probability before its log


def vq_diffusion_terms(schedule: MaskReplaceSchedule, x0: torch.Tensor, x_t: torch.Tensor,
                       t: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x0, x_t: (B, N) codes (x_t may hold [MASK] = K); t: (B,) in 1 … T; logits: (B, K, N) of
    p_θ(x̃_0 | x_t) → (the bound L_t (B,), the cross-entropy −log p_θ(x̃_0 = x_0 | x_t) (B,)), each a
    mean over the N tokens."""
    log_p0 = torch.log_softmax(logits.double(), dim=1)
    nll = -log_p0.gather(1, x0[:, None])[:, 0]  # (B, N): −log p_θ(x̃_0 = x_0 | x_t)
    later = t > 1
    s = (t - 1).clamp(min=0)
    # q(x_{t−1} | x_t, x_0) and p_θ(x_{t−1} | x_t) in one call (shared tables and q(x_t | x_0))
    exact, model = schedule.posterior(torch.cat([onehot(x0, schedule.K), log_p0.exp()]),
                                      x_t.repeat(2, 1), s.repeat(2), t.repeat(2)).chunk(2)
    kl = (torch.xlogy(exact, exact) - exact * model.clamp(min=TINY).log()).sum(1)  # (B, N)
    bound = torch.where(later[:, None], kl, nll).mean(1)
    return bound.to(logits.dtype), nll.mean(1).to(logits.dtype)


def vq_diffusion_loss(schedule: MaskReplaceSchedule, x0: torch.Tensor, x_t: torch.Tensor,
                      t: torch.Tensor, logits: torch.Tensor, aux_weight: float = 5e-4) -> torch.Tensor:
    """L_t + λ·cross-entropy (B,) per sample (`vq_diffusion_terms`), λ = `aux_weight`."""
    bound, nll = vq_diffusion_terms(schedule, x0, x_t, t, logits)
    return bound + aux_weight * nll


def adaptive_aux_scale(t: torch.Tensor, T: int) -> torch.Tensor:
    """The authors' adaptive auxiliary weight factor (1 − t/T) + 1, (B,) float: 2 at t → 0, 1 at T."""
    return 2 - t.double() / T


@dataclass
class TimestepImportance:
    """Importance sampling of t ∈ 1 … T from the history of the loss (VQ-Diffusion's training code).

    history[t−1] is a running mean of L_t² (each new loss of t: 0.1·L² + 0.9·old; its first one
    sets it) and count[t−1] how many losses of t were seen. Until every t has been seen `warmup`
    times t is uniform; then p(t) ∝ √history. `draw` returns t and the weight 1/(T·p(t)) that keeps
    the expected weighted loss the uniform-t one (weight 1 while uniform). The state is a few
    hundred numbers, stored in the checkpoint's train state so that a resumed run draws the same t."""

    T: int
    warmup: int = 10
    history: list[float] = field(default_factory=list)
    count: list[int] = field(default_factory=list)

    def __post_init__(self):
        self.history = list(self.history) or [0.0] * self.T
        self.count = list(self.count) or [0] * self.T
        if len(self.history) != self.T or len(self.count) != self.T:
            raise ValueError(f"a loss history of {len(self.history)} timesteps for T = {self.T}")

    def probabilities(self) -> torch.Tensor | None:
        """p(t) (T,) float64 over t = 1 … T, or None while t is still drawn uniformly."""
        if min(self.count) < self.warmup:
            return None
        root = torch.tensor(self.history, dtype=torch.float64).sqrt() + 1e-10
        return root / root.sum()

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(t (n,) int64 in 1 … T, weight (n,) float64 = 1/(T·p(t)))."""
        p = self.probabilities()
        if p is None:
            return torch.randint(1, self.T + 1, (n,), generator=generator), torch.ones(n, dtype=torch.float64)
        t = torch.multinomial(p, n, replacement=True, generator=generator) + 1
        return t, 1 / (self.T * p[t - 1])

    def update(self, t: torch.Tensor, loss: torch.Tensor) -> None:
        """Take the unweighted per-sample bounds `loss` (B,) of the timesteps t (B,), in order."""
        for ti, li in zip(t.tolist(), loss.double().tolist()):
            if not math.isfinite(li):
                continue
            seen = self.count[ti - 1]
            self.history[ti - 1] = li * li if not seen else 0.1 * li * li + 0.9 * self.history[ti - 1]
            self.count[ti - 1] = seen + 1

    def state(self) -> dict:
        return {"history": list(self.history), "count": list(self.count)}
