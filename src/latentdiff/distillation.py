"""Distillation losses as pure functions of denoisers: latent consistency distillation (Song et al.
2023, Alg. 2; Luo et al. 2023, LCM Alg. 1), guided distillation's first stage (Meng et al. 2023) and
progressive distillation (Salimans & Ho 2022; guided distillation's second stage).

The student f_θ (a `consistency.ConsistencyDenoiser`) learns to give the same origin for two
adjacent points of one probability-flow ODE trajectory of the guided teacher D̃_s (classifier-free
guidance folded into the ODE, LCM's augmented PF-ODE):

    x_{n+1} = z_0 + σ_{n+1}·ε,                                 (a training latent, noised)
    x̂_n = D̃_s + (σ_n/σ_{n+1})·(x_{n+1} − D̃_s),  D̃_s = D_u + s·(D_c − D_u) at (x_{n+1}, σ_{n+1})
                                                              (one DDIM = Euler step of the teacher)
    L = d(f_θ(x_{n+1}, σ_{n+1}, s), sg[f_θ⁻(x̂_n, σ_n, s)])

with θ⁻ an EMA of θ and d the pseudo-Huber metric √(Δ² + c²) − c per element (Song & Dhariwal 2024,
Sec. 3.3; LCM's c = 0.001), or the squared error. The student sees s as an input (`Cond.guidance`),
so it costs one network evaluation per step at any scale. At σ_n = σ_min the boundary makes the
target x̂_n itself, which anchors the chain. The other two losses are below with their equations.
"""

import dataclasses
import math
from collections.abc import Callable

import torch

from latentdiff.conditioning import Cond
from latentdiff.preconditioning import append_dims


def guided_teacher(teacher: Callable, x: torch.Tensor, sigma: torch.Tensor, cond: Cond,
                   uncond: Cond | None, scale: torch.Tensor) -> torch.Tensor:
    """D̃_s = D_u + s·(D_c − D_u) with a scale per sample, s (B,); one batched pass of cond and
    uncond (uncond None: the conditional denoiser D_c alone, s unused)."""
    if uncond is None:
        return teacher(x, sigma, cond)
    d_cond, d_uncond = teacher(torch.cat([x, x]), torch.cat([sigma, sigma]),
                               cond.cat(uncond)).chunk(2)
    return d_uncond + append_dims(scale, x) * (d_cond - d_uncond)


def ddim_step(x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor,
              sigma_next: torch.Tensor) -> torch.Tensor:
    """One DDIM (Euler) step of the probability-flow ODE from σ to σ_next (B,):
    x̂ = D + (σ_next/σ)·(x − D)."""
    return denoised + append_dims(sigma_next / sigma, x) * (x - denoised)


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """√((a − b)² + c²) − c, averaged per sample: (B, ...) → (B,); c = 0: the mean |a − b|."""
    return (((a.float() - b.float()) ** 2 + c ** 2).sqrt() - c).flatten(1).mean(1)


def consistency_distillation_loss(student: Callable, target: Callable, teacher: Callable,
                                  z0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor,
                                  sigma_next: torch.Tensor, cond: Cond, uncond: Cond | None,
                                  scale: torch.Tensor, huber_c: float | None) -> torch.Tensor:
    """L per sample (B,) for latents z0 and noise (B, c, h, w), adjacent grid levels σ > σ_next
    (B,) and guidance scales s (B,); `cond` carries s as `guidance` for the student and target.
    huber_c None: the squared error."""
    x = z0 + append_dims(sigma, z0) * noise
    with torch.no_grad():
        teacher_cond = dataclasses.replace(cond, guidance=None)
        x_next = ddim_step(x, guided_teacher(teacher, x, sigma, teacher_cond, uncond, scale),
                           sigma, sigma_next)
        aim = target(x_next, sigma_next, cond)
    prediction = student(x, sigma, cond)
    if huber_c is None:
        return (prediction.float() - aim.float()).pow(2).flatten(1).mean(1)
    return pseudo_huber(prediction, aim, huber_c)


def truncated_snr(sigma: torch.Tensor) -> torch.Tensor:
    """λ = max(SNR, 1) = max(1/σ², 1) on the x̂₀ error (Salimans & Ho 2022, Sec. 4): the x̂₀ loss
    at low noise, the v-like loss at high noise. (B,) → (B,)."""
    return sigma.float().pow(-2).clamp_min(1.0)


def guidance_distillation_loss(student: Callable, teacher: Callable, z0: torch.Tensor,
                               noise: torch.Tensor, sigma: torch.Tensor, cond: Cond,
                               uncond: Cond, scale: torch.Tensor) -> torch.Tensor:
    """Stage one of guided distillation (Meng et al. 2023, Eq. 6): the student D_S(x, σ, s) (s in
    `cond.guidance`) regresses the guided teacher D̃_s = D_u + s·(D_c − D_u) at x = z0 + σ·ε, with
    λ = max(SNR, 1). Per sample (B,)."""
    x = z0 + append_dims(sigma, z0) * noise
    with torch.no_grad():
        aim = guided_teacher(teacher, x, sigma, dataclasses.replace(cond, guidance=None), uncond,
                             scale)
    error = (student(x, sigma, cond).float() - aim.float()).pow(2).flatten(1).mean(1)
    return truncated_snr(sigma) * error


def progressive_distillation_loss(student: Callable, teacher: Callable, z0: torch.Tensor,
                                  noise: torch.Tensor, sigma: torch.Tensor,
                                  sigma_mid: torch.Tensor, sigma_next: torch.Tensor,
                                  cond: Cond) -> torch.Tensor:
    """Progressive distillation (Salimans & Ho 2022, Alg. 2): two DDIM steps of the teacher,
    σ → σ_mid → σ_next, give x''; the student's one DDIM step σ → σ_next lands there when its
    x̂₀ = (x'' − (σ_next/σ)·x)/(1 − σ_next/σ), its target, with λ = max(SNR, 1). Per sample
    (B,)."""
    x = z0 + append_dims(sigma, z0) * noise
    with torch.no_grad():
        x_mid = ddim_step(x, teacher(x, sigma, cond), sigma, sigma_mid)
        x_next = ddim_step(x_mid, teacher(x_mid, sigma_mid, cond), sigma_mid, sigma_next)
        ratio = append_dims(sigma_next / sigma, x)
        aim = (x_next - ratio * x) / (1 - ratio)
    error = (student(x, sigma, cond).float() - aim.float()).pow(2).flatten(1).mean(1)
    return truncated_snr(sigma) * error


def consistency_training_loss(student: Callable, target: Callable, z0: torch.Tensor,
                              noise: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
                              cond: Cond, huber_c: float | None) -> torch.Tensor:
    """Consistency training (Song et al. 2023, Alg. 3; Song & Dhariwal 2024; Geng et al. 2025):
    without a teacher, the two points of one trajectory are the same data and noise at two levels,
    x = z0 + σ·ε and x' = z0 + σ'·ε (σ' < σ), and L = λ·d(f_θ(x, σ), sg[f_θ⁻(x', σ')]) with
    λ = 1/(σ − σ') (iCT's and ECT's weighting). Per sample (B,); huber_c None: squared error."""
    with torch.no_grad():
        aim = target(z0 + append_dims(sigma_next, z0) * noise, sigma_next, cond)
    prediction = student(z0 + append_dims(sigma, z0) * noise, sigma, cond)
    if huber_c is None:
        distance = (prediction.float() - aim.float()).pow(2).flatten(1).mean(1)
    else:
        distance = pseudo_huber(prediction, aim, huber_c)
    return distance / (sigma - sigma_next).float()


def ect_next_sigma(sigma: torch.Tensor, stage: int, sigma_min: float, q: float = 2.0,
                   k: float = 8.0, b: float = 1.0) -> torch.Tensor:
    """ECT's pair (Geng et al. 2025, Sec. 3): σ' = σ·(1 − n(σ)/q^stage), n(σ) = 1 + k·sigmoid(−b·σ),
    so the gap shrinks by q at every stage of the curriculum (stage 0: σ' = σ_min, the diffusion
    loss); never below σ_min. (B,) → (B,)."""
    ratio = 1 - (1 + k * torch.sigmoid(-b * sigma)) / q ** stage
    return (sigma * ratio).clamp_min(sigma_min)


def truncated_lognormal(u: torch.Tensor, low: float, high: float, mean: float = -1.1,
                        std: float = 2.0) -> torch.Tensor:
    """σ with ln σ ~ N(mean, std²) truncated to [low, high], by inverting its CDF at uniform draws
    u (B,) → (B,) float32 (ECT's and iCT's noise distribution, P_mean = −1.1, P_std = 2.0)."""
    a, b = (torch.special.ndtr(torch.tensor((math.log(v) - mean) / std, dtype=torch.float64))
            for v in (low, high))
    p = (a + u.double() * (b - a)).clamp(1e-12, 1 - 1e-12)
    return (mean + std * torch.special.ndtri(p)).exp().clamp(low, high).float()


def ict_grid(sigma_min: float, sigma_max: float, step: int, total: int, s0: int = 10,
             s1: int = 1280, rho: float = 7.0) -> torch.Tensor:
    """iCT's discretisation curriculum (Song & Dhariwal 2024, Sec. 3.4): N(k) = min(s0·2^⌊k/K'⌋, s1)
    + 1 levels, K' = ⌊K/(log2⌊s1/s0⌋ + 1)⌋, spaced as Karras et al. (ρ = 7) from σ_min to σ_max;
    increasing, float64 (N,)."""
    doublings = int(torch.log2(torch.tensor(s1 // s0, dtype=torch.float64))) + 1
    n = min(s0 * 2 ** (step // max(1, total // doublings)), s1) + 1
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    return (sigma_min ** (1 / rho) + ramp * (sigma_max ** (1 / rho) - sigma_min ** (1 / rho))) ** rho


def lognormal_index(grid: torch.Tensor, u: torch.Tensor, mean: float = -1.1,
                    std: float = 2.0) -> torch.Tensor:
    """i ∈ {0 … N − 2} drawn with p(i) ∝ erf((ln σ_{i+1} − m)/(√2 s)) − erf((ln σ_i − m)/(√2 s))
    (iCT's discrete lognormal) by inverting the CDF at uniform draws u (B,) → (B,) int64."""
    edges = torch.erf((grid.log() - mean) / (2 ** 0.5 * std))
    weights = (edges[1:] - edges[:-1]).clamp_min(0)
    cdf = torch.cumsum(weights, 0) / weights.sum()
    return torch.searchsorted(cdf.to(u.device), u.double()).clamp(max=len(weights) - 1)
