"""The σ-space ODE/SDE samplers of Karras et al. 2022 ("EDM") and k-diffusion: Euler, Euler
ancestral, Heun (with "churn"), and linear multistep (LMS).

They integrate the probability-flow ODE dx/dσ = (x − D(x; σ))/σ (Karras Eq. 3 with s(t) = 1,
σ(t) = t) on a decreasing σ grid that ends at 0. Each is a pure function of a denoiser, a start x
(B, ...) and the grid.
"""

from collections.abc import Callable

import numpy as np
import torch

from latentdiff.conditioning import Cond
from latentdiff.samplers.ancestral import check_eta, ddim_noise_std, report_step
from latentdiff.samplers.randomness import Generators, randn_like


def ode_derivative(x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """dx/dσ = (x − D(x; σ))/σ = ε̂."""
    return (x - denoised) / sigma


def ancestral_step(sigma: torch.Tensor, sigma_next: torch.Tensor,
                   eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(σ_down, σ_up): a step to σ_next split into a deterministic step to σ_down and fresh noise of
    std σ_up, σ_down² + σ_up² = σ_next²; σ_up = DDIM's σ_t(η) (η = 1: the DDPM posterior)."""
    sigma_up = torch.minimum(ddim_noise_std(sigma, sigma_next, eta), sigma_next)
    return (sigma_next ** 2 - sigma_up ** 2).sqrt(), sigma_up


# Euler (Karras Alg. 1 without churn): x_next = x + (σ_next − σ)·ε̂ — identical to DDIM(η = 0) in
# this view
@torch.no_grad()
def sample_euler(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, *,
                 cond: Cond | None = None,
                 generator: Generators = None, callback: Callable | None = None) -> torch.Tensor:
    """First order, 1 NFE per step, deterministic."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i], cond)
        x = x + (sigmas[i + 1] - sigmas[i]) * ode_derivative(x, denoised, sigmas[i])
        report_step(callback, i, x, sigmas[i], denoised)
    return x


# Euler ancestral: Euler to σ_down, then add σ_up·n (σ_down, σ_up from `ancestral_step`)
@torch.no_grad()
def sample_euler_ancestral(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, *,
                           cond: Cond | None = None,
                           eta: float = 1.0, s_noise: float = 1.0, generator: Generators = None,
                           callback: Callable | None = None) -> torch.Tensor:
    """First order, 1 NFE per step, stochastic (η = 1: DDPM's posterior noise; η = 0: Euler)."""
    check_eta(eta)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i], cond)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = x + (sigma_down - sigmas[i]) * ode_derivative(x, denoised, sigmas[i])
        if sigma_up > 0:
            x = x + s_noise * sigma_up * randn_like(x, generator)
        report_step(callback, i, x, sigmas[i], denoised)
    return x


# Heun (Karras Alg. 2): churn σ → σ̂ = σ(1 + γ) with fresh noise, Euler to σ_next, then the
# trapezoidal correction
@torch.no_grad()
def sample_heun(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, *,
                cond: Cond | None = None,
                s_churn: float = 0.0, s_tmin: float = 0.0,
                s_tmax: float = float("inf"), s_noise: float = 1.0,
                generator: Generators = None, callback: Callable | None = None) -> torch.Tensor:
    """Second order, 2 NFE per step (1 on the last step to σ = 0); s_churn > 0 adds EDM's stochastic
    churn γ = min(s_churn/steps, √2 − 1) on s_tmin ≤ σ ≤ s_tmax."""
    if s_churn < 0:
        raise ValueError(f"s_churn={s_churn} must be ≥ 0")
    steps = len(sigmas) - 1
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        gamma = min(s_churn / steps, 2 ** 0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x = x + s_noise * (sigma_hat ** 2 - sigma ** 2).sqrt() * randn_like(x, generator)
        denoised = denoiser(x, sigma_hat, cond)
        d = ode_derivative(x, denoised, sigma_hat)
        x_euler = x + (sigma_next - sigma_hat) * d
        if sigma_next == 0:
            x = x_euler
        else:
            d_next = ode_derivative(x_euler, denoiser(x_euler, sigma_next, cond), sigma_next)
            x = x + (sigma_next - sigma_hat) * (d + d_next) / 2
        report_step(callback, i, x, sigma_hat, denoised)
    return x


def lms_coefficients(sigmas: np.ndarray, i: int, order: int) -> list[float]:
    """∫_{σ_i}^{σ_{i+1}} ℓ_j(σ) dσ for the Lagrange basis ℓ_j through σ_i, σ_{i−1}, …, σ_{i−order+1}
    (exact, by integrating the polynomials)."""
    nodes = [sigmas[i - k] for k in range(order)]
    coefficients = []
    for j in range(order):
        basis = np.polynomial.Polynomial([1.0])
        for k in range(order):
            if k != j:
                basis = basis * np.polynomial.Polynomial([-nodes[k], 1.0]) / (nodes[j] - nodes[k])
        antiderivative = basis.integ()
        coefficients.append(float(antiderivative(sigmas[i + 1]) - antiderivative(sigmas[i])))
    return coefficients


# Linear multistep: x_next = x + Σ_j c_j·ε̂_{i−j}, c_j = ∫ ℓ_j dσ over [σ_i, σ_{i+1}]
# (Adams–Bashforth in σ)
@torch.no_grad()
def sample_lms(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, *,
               cond: Cond | None = None, order: int = 4,
               generator: Generators = None, callback: Callable | None = None) -> torch.Tensor:
    """Order `order` (default 4, lower for the first steps), 1 NFE per step, deterministic."""
    if order < 1:
        raise ValueError(f"order={order} must be ≥ 1")
    grid = sigmas.double().cpu().numpy()
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i], cond)
        history = [ode_derivative(x, denoised, sigmas[i])] + history[:order - 1]
        coefficients = lms_coefficients(grid, i, min(i + 1, order))
        x = x + sum(c * d for c, d in zip(coefficients, history))
        report_step(callback, i, x, sigmas[i], denoised)
    return x
