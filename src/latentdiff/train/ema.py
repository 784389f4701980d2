"""Exponential moving averages of the weights, used for sampling: the classic one with a fixed
decay, and the power-function EMA that post-hoc EMA (`posthoc_ema.py`) stores two of."""

import copy

import numpy as np
import torch
from torch import nn


class EMA:
    """θ_ema ← d·θ_ema + (1 − d)·θ, d = min(decay, (1 + n)/(10 + n)) after n updates (the original
    LitEma warm-up, so early averages are not dominated by the random initialisation)."""

    def __init__(self, model: nn.Module, decay: float, num_updates: int = 0):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.num_updates = decay, num_updates

    def decay_at(self, n: int) -> float:
        """d of the n-th update (n = 1, 2, …)."""
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        d = self.decay_at(self.num_updates)
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1.0 - d)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent γ of the power-function profile with relative std σ_rel (Karras et al. 2024,
    Eq. 3): σ_rel² = (γ + 1)/((γ + 2)²(γ + 3)), i.e. the largest real root of
    γ³ + 7γ² + (16 − σ_rel⁻²)γ + (12 − σ_rel⁻²) = 0."""
    t = sigma_rel ** -2
    return float(np.roots([1.0, 7.0, 16.0 - t, 12.0 - t]).real.max())


def gamma_to_sigma_rel(gamma: float) -> float:
    return float(np.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3))))


class PowerEMA(EMA):
    """Power-function EMA (Karras et al. 2024, Sec. 3.1): d = (1 − 1/n)^(γ+1) at update n, so that
    after t updates θ̂_t = Σ_τ w_τ·θ_τ with w_τ = (τ^(γ+1) − (τ − 1)^(γ+1))/t^(γ+1) ∝ τ^γ: an
    average over the last fraction of training whose width relative to t, σ_rel, stays fixed."""

    def __init__(self, model: nn.Module, sigma_rel: float, num_updates: int = 0):
        super().__init__(model, 0.0, num_updates)
        self.sigma_rel, self.gamma = sigma_rel, sigma_rel_to_gamma(sigma_rel)

    def decay_at(self, n: int) -> float:
        return (1.0 - 1.0 / n) ** (self.gamma + 1.0)
