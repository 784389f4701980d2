"""Consistency models (Song et al., ICML 2023) on the denoiser seam: a function f(x, σ) that maps
every point x of a probability-flow ODE trajectory at noise level σ to the trajectory's origin, with
f(x, σ_min) = x.

It is a denoiser like any other (a sampler calls it as D(x; σ, cond)), built on a network's denoiser
D with a boundary parameterisation (App. C, Eq. 5):

    f(x, σ) = c_skip(σ)·x + c_out(σ)·D(x; σ),   c_skip(σ_min) = 1, c_out(σ_min) = 0.

`Boundary` is this project's form in σ (`config.StudentConfig`); `LCMBoundary` is the latent
consistency model's (Luo et al. 2023), which scales the timestep rather than σ and keeps the VP
latent z_t = x/√(1 + σ²) at the boundary: diffusers' `LCMScheduler` (sampling parity in
tests/test_sampler_parity.py). Multistep consistency sampling (Song et al. 2023, Alg. 1) is the
sampler `consistency` (`samplers/consistency.py`).
"""

from dataclasses import dataclass

import torch

from latentdiff.conditioning import Cond
from latentdiff.config import StudentConfig
from latentdiff.denoiser import DenoiserWrapper, per_sample_sigma
from latentdiff.noise import NoiseSchedule
from latentdiff.preconditioning import append_dims


@dataclass(frozen=True)
class Boundary:
    """c_skip = b²/(Δ² + b²), c_out = Δ/√(Δ² + b²), Δ = max(σ − σ_min, 0): exactly (1, 0) at σ_min
    and → (0, 1) for Δ ≫ b, so that a student initialised as its teacher starts as f ≈ D."""

    sigma_min: float
    width: float

    @classmethod
    def of(cls, cfg: StudentConfig) -> "Boundary":
        return cls(cfg.sigma_min, cfg.boundary_width)

    def _delta(self, sigma: torch.Tensor) -> torch.Tensor:
        return (sigma - self.sigma_min).clamp_min(0)

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.width ** 2 / (self._delta(sigma) ** 2 + self.width ** 2)

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        delta = self._delta(sigma)
        return delta * (delta ** 2 + self.width ** 2).rsqrt()


@dataclass(frozen=True)
class LCMBoundary:
    """LCM's boundary on a discrete VP schedule: with τ = timestep_scaling·t(σ),
    denoised = σ_d²/(τ² + σ_d²)·z_t + τ/√(τ² + σ_d²)·x̂₀ and z_t = x/√(1 + σ²); so here
    c_skip = σ_d²/(τ² + σ_d²)/√(1 + σ²) and c_out = τ/√(τ² + σ_d²). At t = 0, f = z_0 (the VP
    latent at timestep 0, not x)."""

    schedule: NoiseSchedule
    timestep_scaling: float = 10.0
    sigma_data: float = 0.5

    def _tau(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.timestep_scaling * self.schedule.sigma_to_t(sigma)

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        tau = self._tau(sigma)
        return self.sigma_data ** 2 / (tau ** 2 + self.sigma_data ** 2) * (1 + sigma ** 2).rsqrt()

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        tau = self._tau(sigma)
        return tau * (tau ** 2 + self.sigma_data ** 2).rsqrt()


class ConsistencyDenoiser(DenoiserWrapper):
    """f(x, σ) = c_skip(σ)·x + c_out(σ)·D(x; σ, cond) for a denoiser D and a boundary; x (B, ...),
    σ scalar or (B,) → (B, ...)."""

    def __init__(self, denoiser, boundary: Boundary | LCMBoundary):
        self.denoiser, self.boundary = denoiser, boundary

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float,
                 cond: Cond | None = None) -> torch.Tensor:
        sigma = per_sample_sigma(sigma, x)
        c_skip, c_out = (append_dims(c(sigma), x) for c in (self.boundary.c_skip,
                                                            self.boundary.c_out))
        return c_skip * x + c_out * self.denoiser(x, sigma, cond)
