"""Closed-form oracles for data x0 ~ N(μ, s²·I): exact denoisers and the exact probability-flow ODE
solution."""

import torch
from torch import nn

from latentdiff.noise import NoiseSchedule
from latentdiff.preconditioning import make_preconditioning, effective_target

MU, S = 0.5, 0.3


def exact_denoiser(x: torch.Tensor, sigma, cond=None) -> torch.Tensor:
    """E[x0 | x] for x = x0 + σ·n (VE): μ + s²/(s² + σ²)·(x − μ)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype)
    return MU + S ** 2 / (S ** 2 + sigma ** 2) * (x - MU)


def ode_solution(x_T: torch.Tensor, sigma_T) -> torch.Tensor:
    """x(σ = 0) of dx/dσ = (x − D(x; σ))/σ from x_T at σ_T: μ + (x_T − μ)·s/√(s² + σ_T²)."""
    return MU + (x_T - MU) * S / (S ** 2 + torch.as_tensor(sigma_T) ** 2).sqrt()


class ExactDiscreteNet(nn.Module):
    """A VP network net(z_t, t) that outputs the exact eps / x0 / v for Gaussian data on a discrete
    schedule."""

    def __init__(self, schedule: NoiseSchedule, prediction: str):
        super().__init__()
        self.schedule, self.prediction = schedule, prediction

    def forward(self, z_t, t, class_labels=None, context=None):
        sigma = self.schedule.sigmas[t.round().long()]
        x = z_t * (1 + sigma ** 2).sqrt().reshape(-1, *[1] * (z_t.ndim - 1))
        precond = make_preconditioning(self.schedule, self.prediction)
        return effective_target(precond,
                                exact_denoiser(x, sigma.reshape(-1, *[1] * (z_t.ndim - 1))), x,
                                sigma)
