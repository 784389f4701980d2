"""DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
Probabilistic Models"): exponential integrators of the probability-flow ODE in the data prediction
D = x̂_0, multistep (2M, 3M), singlestep (2S) and the SDE variants.

In the VE view x = z/√ᾱ, σ = √(1−ᾱ)/√ᾱ, the half-log-SNR is λ = −log σ and the VP update
z_t = (σ_t/σ_s)·z_s − α_t·(e^{−h} − 1)·D  (h = λ_t − λ_s) becomes x_t = (σ_t/σ_s)·x_s − (e^{−h} − 1)·D:
the α's cancel, so the formulas below are the paper's with α = 1. Every step to σ = 0 is first order
(x = D).
"""

from collections.abc import Callable

import torch

from latentdiff.conditioning import Cond
from latentdiff.samplers.ancestral import check_eta, report_step
from latentdiff.samplers.karras import ancestral_step
from latentdiff.samplers.randomness import Generators, randn_like


def _lam(sigma: torch.Tensor) -> torch.Tensor:
    return -sigma.log()


# DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): x_t = (σ_t/σ_s)x − (e^{−h} − 1)·[(1 + 1/2r)·D_s −
# 1/2r·D_prev]; (3M) adds the second divided difference (App. B); eta > 0: the SDE variants (Eq. 18,
# midpoint), whose step is x_t = (σ_t/σ_s)·e^{−ηh}·x − (e^{−(1+η)h} − 1)·D + … + σ_t·√(1 −
# e^{−2ηh})·n
@torch.no_grad()
def sample_dpmpp_multistep(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, *,
                           cond: Cond | None = None,
                           order: int = 2, eta: float = 0.0, s_noise: float = 1.0,
                           lower_order_final: bool = True,
                           legacy: bool = False, generator: Generators = None,
                           callback: Callable | None = None) -> torch.Tensor:
    """Multistep DPM-Solver++ of order 1–3, 1 NFE per step; the first steps use lower orders and
    every step to σ = 0 is x = D. eta > 0 adds noise (eta = 1: SDE-DPM-Solver++). lower_order_final:
    with fewer than 15 steps the second-to-last step of order 3 is second order (as the reference
    code and diffusers, for stability).

    The D'' term of order 3: with D ≈ D_s + τ·D' + τ²/2·D'' (τ = λ − λ_s) the exact integral of its
    last term is h³/6·D'' = −φ₃·h²·D''; the second divided difference d2 = (d1_0 − d1_1)/(r0 + r1)
    estimates h²·D''/2, so the update needs 2·d2. legacy=True uses d2 itself, as the DPM-Solver
    reference code, k-diffusion and diffusers do: half the D'' term, which makes that "3M" converge
    at second order (see docs/samplers.md).
    """
    check_eta(eta)
    if order not in (1, 2, 3):
        raise ValueError(f"order={order} must be 1, 2 or 3")
    steps = len(sigmas) - 1
    d_1 = d_2 = h_1 = h_2 = None  # D and step of the last two steps
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma, cond)
        if sigma_next == 0:
            x, h = denoised, None
        else:
            h = _lam(sigma_next) - _lam(sigma)
            h_eta = h * (eta + 1)
            x = (sigma_next / sigma) * torch.exp(-eta * h) * x - torch.expm1(-h_eta) * denoised
            this_order = min(order, 1 + (h_1 is not None) + (h_2 is not None))
            if lower_order_final and steps < 15 and i == steps - 2:
                this_order = min(this_order, 2)
            if this_order == 3:
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (denoised - d_1) / r0, (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1) * (1 if legacy else 2)
                phi_2 = torch.expm1(-h_eta) / h_eta + 1
                x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
            elif this_order == 2:  # the midpoint update
                x = x - 0.5 * torch.expm1(-h_eta) * (denoised - d_1) / (h_1 / h)
            if eta > 0:
                x = x + s_noise * sigma_next * (-torch.expm1(-2 * h * eta)).sqrt() * randn_like(x, generator)
        d_1, d_2, h_1, h_2 = denoised, d_1, h, h_1
        report_step(callback, i, x, sigma, denoised)
    return x


# DPM-Solver++(2S) (Lu et al. 2022, Alg. 1, r = 1/2): a first-order step to the midpoint in λ, then
# the full step with the midpoint's D; eta > 0: ancestral (the step goes to σ_down, then adds
# σ_up·n)
@torch.no_grad()
def sample_dpmpp_2s(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, *,
                    cond: Cond | None = None,
                    eta: float = 0.0, s_noise: float = 1.0, generator: Generators = None,
                    callback: Callable | None = None) -> torch.Tensor:
    """Second order singlestep, 2 NFE per step (1 on the last step to σ = 0)."""
    check_eta(eta)
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]
        denoised = denoiser(x, sigma, cond)
        sigma_down, sigma_up = ancestral_step(sigma, sigmas[i + 1], eta)
        if sigma_down == 0:
            x = denoised
        else:
            h = _lam(sigma_down) - _lam(sigma)
            sigma_mid = torch.exp(-(_lam(sigma) + h / 2))
            x_mid = (sigma_mid / sigma) * x - torch.expm1(-h / 2) * denoised
            x = (sigma_down / sigma) * x - torch.expm1(-h) * denoiser(x_mid, sigma_mid, cond)
        if sigma_up > 0:
            x = x + s_noise * sigma_up * randn_like(x, generator)
        report_step(callback, i, x, sigma, denoised)
    return x
