"""DDIM and DDPM ancestral sampling, written in σ-space (x = z_t/√ᾱ_t, σ = √((1 − ᾱ)/ᾱ)).

Each sampler is a pure function of a denoiser D(x; σ, cond) = x̂_0, a starting x (B, ...) and a
decreasing σ grid that ends at 0; randomness comes only from `generator`, progress is reported only
through `callback`.
"""

from collections.abc import Callable

import torch

from latentdiff.conditioning import Cond
from latentdiff.samplers.randomness import Generators, randn_like


def report_step(callback: Callable | None, i: int, x: torch.Tensor, sigma: torch.Tensor,
                denoised: torch.Tensor) -> None:
    """The one way samplers report progress: callback({"i", "x", "sigma", "denoised"}) after step
    i."""
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "denoised": denoised})


def check_eta(eta: float) -> None:
    """η scales the fresh noise of a stochastic step; a negative η is an error."""
    if eta < 0:
        raise ValueError(f"eta={eta} must be ≥ 0")


def ddim_noise_std(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float) -> torch.Tensor:
    """DDIM's σ_t(η) (Song et al. 2021, Eq. 16) in VE scale: η·√(σ_next²(σ² − σ_next²)/σ²)."""
    return eta * (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2).sqrt()


# DDIM (Song et al. 2021, Eq. 12): x_next = x̂_0 + √(σ_next² − s²)·ε̂ + s·n, ε̂ = (x − x̂_0)/σ, s =
# σ_t(η)
@torch.no_grad()
def sample_ddim(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, *,
                cond: Cond | None = None,
                eta: float = 0.0, generator: Generators = None,
                callback: Callable | None = None) -> torch.Tensor:
    """Deterministic for η = 0 (1 NFE per step, first order); η = 1 is DDPM's posterior (β̃) on this
    grid; η > 1 would add more noise than a step removes (√(σ_next² − s²) of a negative number)."""
    check_eta(eta)
    if eta > 1:
        raise ValueError(f"eta={eta} must be in [0, 1] for ddim")
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        s = ddim_noise_std(sigma, sigma_next, eta)
        x = x0 + (sigma_next ** 2 - s ** 2).sqrt() * (x - x0) / sigma
        if s > 0:
            x = x + s * randn_like(x, generator)
        report_step(callback, i, x, sigma, x0)
    return x


# DDPM ancestral step (Ho et al. 2020, Eq. 6–7) on any σ subsequence: posterior mean + σ_noise·n
@torch.no_grad()
def sample_ddpm(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, *,
                cond: Cond | None = None,
                variance: str = "small", generator: Generators = None,
                callback: Callable | None = None) -> torch.Tensor:
    """variance: "small" (β̃_t, the posterior's, = DDIM η = 1) or "large" (β_t); same posterior mean
    either way."""
    if variance not in ("small", "large"):
        raise ValueError(f"variance={variance!r}; use small or large")
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        s_post = ddim_noise_std(sigma, sigma_next, 1.0)
        x = x0 + (sigma_next ** 2 - s_post ** 2).sqrt() * (x - x0) / sigma
        if sigma_next > 0:
            # β_t = 1 − ᾱ_t/ᾱ_next in VP scale; in VE scale divided by ᾱ_next = 1/(1 + σ_next²)
            s = s_post if variance == "small" else ((sigma ** 2 - sigma_next ** 2) * (1 + sigma_next ** 2)
                                                    / (1 + sigma ** 2)).sqrt()
            x = x + s * randn_like(x, generator)
        report_step(callback, i, x, sigma, x0)
    return x
