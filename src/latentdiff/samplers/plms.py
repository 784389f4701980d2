"""PLMS / PNDM (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds"), the
pseudo linear multistep variant the LDM repository ships (diffusers: PNDMScheduler with
skip_prk_steps=True).

The transfer function φ is the DDIM step, in the VE view x_next = x + (σ_next − σ)·ε'; ε' combines
the last ε̂ with Adams–Bashforth weights for equal steps: (3, −1)/2, (23, −16, 5)/12,
(55, −59, 37, −9)/24. The first step is a pseudo improved-Euler step:
ε' = (ε̂(x, σ_0) + ε̂(x_Euler, σ_1))/2, costing one extra NFE.
"""

from collections.abc import Callable

import torch

from latentdiff.conditioning import Cond
from latentdiff.samplers.ancestral import report_step
from latentdiff.samplers.karras import ode_derivative
from latentdiff.samplers.randomness import Generators

ADAMS_BASHFORTH = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12),
                   4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


@torch.no_grad()
def sample_plms(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, *,
                cond: Cond | None = None,
                generator: Generators = None, callback: Callable | None = None) -> torch.Tensor:
    """Adams–Bashforth-4 weights for equal steps in t, but ε is integrated against dσ: second order
    on a grid that is not uniform in σ (measured in tests). 1 NFE per step plus 1 on the first step;
    deterministic."""
    history: list[torch.Tensor] = []  # ε̂ of the earlier steps, newest first
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma, cond)
        eps = ode_derivative(x, denoised, sigma)
        if not history:
            eps_prime = eps
            if len(sigmas) > 2:  # pseudo improved Euler: average with ε̂ at the Euler prediction
                x_euler = x + (sigma_next - sigma) * eps
                d_next = denoiser(x_euler, sigma_next, cond)
                eps_prime = (eps + ode_derivative(x_euler, d_next, sigma_next)) / 2
        else:
            weights = ADAMS_BASHFORTH[min(len(history) + 1, 4)]
            eps_prime = sum(w * e for w, e in zip(weights, [eps] + history))
        history = [eps] + history[:3]
        x = x + (sigma_next - sigma) * eps_prime
        report_step(callback, i, x, sigma, denoised)
    return x
