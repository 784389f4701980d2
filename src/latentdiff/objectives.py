"""Training objectives (paper Sec. 3.2) as weighted denoising losses on the same D(x; σ) that
sampling uses.

L = E_{z_0, n ~ N(0, I), σ} λ(σ)·‖D(z_0 + σ·n; σ, y) − z_0‖² (Karras et al. 2022, Eq. 2 and 8). With
λ = 1/c_out(σ)² this is the network-output MSE ‖F_θ − F_target‖² of the preconditioning: for the
paper's ε-prediction λ = 1/σ² and the loss is DDPM's L_simple ‖ε̂ − ε‖² (the paper's L_LDM); x0- and
v-prediction give ‖x̂₀ − z_0‖² and ‖v̂ − v‖². The weightings λ are in `weighting.py`; how σ is drawn
is here. Losses are per sample; reduction happens in the training loop; randomness is passed in.
"""

import math
from dataclasses import dataclass

import torch

from latentdiff.conditioning import Cond
from latentdiff.config import ObjectiveConfig
from latentdiff.denoiser import Denoiser
from latentdiff.noise import NoiseSchedule
from latentdiff.preconditioning import append_dims, effective_target


@dataclass(frozen=True)
class Teacher:
    """A trained denoiser whose network outputs a student also learns (`spectral_distillation`):
    the term's `weight` and the spectral exponent `alpha`."""

    denoiser: Denoiser
    weight: float = 1.0
    alpha: float = 1.0


def denoising_loss(denoiser: Denoiser, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                   cond: Cond | None = None, weight: torch.Tensor | None = None,
                   teacher: Teacher | None = None) -> torch.Tensor:
    """λ(σ)·mean ‖D(x0 + σ·n; σ) − x0‖² per sample; x0, noise: (B, c, h, w), sigma (B,) → (B,)
    float32.

    `weight` λ (B,); None: λ = 1/c_out², the network-output MSE. Computed in the equal form
    λ·c_out²·‖F_θ − F_target‖² with F_target = (x0 − c_skip·x)/c_out (Karras et al. 2022, Eq. 8): at
    large σ the D form subtracts x0 from c_skip·x + c_out·F_θ, both of size σ, and its rounding
    (a few ulp of σ) would enter the gradient; F_target is fixed per sample, so the network's
    gradient carries none of it. With a `teacher`, its weighted `spectral_distillation` term at the
    same noisy x is added.
    """
    x0 = x0.float()
    x = x0 + append_dims(sigma, x0) * noise.float()
    output = denoiser.network_output(x, sigma, cond).float()
    mse = (output - effective_target(denoiser.precond, x0, x, sigma)).pow(2).flatten(1).mean(1)
    loss = mse if weight is None else weight.float() * denoiser.precond.c_out(sigma).float() ** 2 * mse
    if teacher is None:
        return loss
    return loss + teacher.weight * spectral_distillation(output, teacher.denoiser, x, sigma, cond,
                                                         teacher.alpha)


def spectral_distillation(output: torch.Tensor, teacher: Denoiser, x: torch.Tensor,
                          sigma: torch.Tensor, cond: Cond | None, alpha: float) -> torch.Tensor:
    """Spectrum-aware distillation (Yang et al. 2023, Sec. 4.2), per sample (B,):
    mean_(u,v) w·|FFT(F_s − F_t)|², F_s = `output` the student's network output at x (B, c, h, w),
    F_t the teacher's, w = |FFT(x̂₀,t)|^(−α) normalised to mean 1 per sample (x̂₀,t the teacher's
    clean estimate; magnitudes floored at 10⁻³ of their mean). The orthonormal FFT keeps Parseval:
    α = 0 gives the spatial MSE ‖F_s − F_t‖²/n."""
    with torch.no_grad():
        target = teacher.network_output(x, sigma, cond).float()
        precond = teacher.precond
        x0 = (append_dims(precond.c_skip(sigma), x) * x
              + append_dims(precond.c_out(sigma), x) * target)
        magnitude = torch.fft.fft2(x0, norm="ortho").abs()
        floor = 1e-3 * magnitude.mean(dim=(1, 2, 3), keepdim=True)
        w = magnitude.clamp_min(floor).pow(-alpha)
        w = w / w.mean(dim=(1, 2, 3), keepdim=True)
    difference = torch.fft.fft2(output - target, norm="ortho")
    return (w * difference.abs().pow(2)).flatten(1).mean(1)


def ddpm_loss(denoiser: Denoiser, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
              cond: Cond | None = None) -> torch.Tensor:
    """L_LDM (paper Eq. 2 in the latent; DDPM's L_simple for the configured target ε, x0 or v) at
    integer timesteps t (B,) of the denoiser's discrete schedule: σ = σ_t, λ = 1/c_out². x0, noise:
    (B, c, h, w) → (B,)."""
    sigma = denoiser.precond.schedule.sigmas.to(t.device)[t]
    return denoising_loss(denoiser, x0, sigma, noise, cond)


def draw_timesteps(batch_size: int, num_timesteps: int, generator: torch.Generator) -> torch.Tensor:
    """t ~ U{0..T−1} (the paper's U{1..T}), (B,) int64 on the CPU."""
    return torch.randint(0, num_timesteps, (batch_size,), generator=generator)


def normal_parameters(cfg: ObjectiveConfig, sigma_data: float) -> tuple[float, float]:
    """(mean, std) of ln σ for the continuous σ samplers: the config's, else the published
    defaults (EDM2's latent setting −0.4, 1.0 for σ_d = 0.5, moved by ln(σ_d/0.5); SD3's 0, 1)."""
    if cfg.sigma_sampler == "lognormal":
        default = (-0.4 + math.log(sigma_data / 0.5), 1.0)
    else:
        default = (0.0, 1.0)
    return (default[0] if cfg.mean is None else cfg.mean,
            default[1] if cfg.std is None else cfg.std)


def draw_sigmas(cfg: ObjectiveConfig, schedule: NoiseSchedule, sigma_data: float, batch_size: int,
                generator: torch.Generator) -> torch.Tensor:
    """Training noise levels σ (B,) float32 on the CPU: σ_t of the schedule at t ~ U{0..T−1}
    ("uniform"), or α·exp(mean + std·n), n ~ N(0, 1), with the schedule's shift α ("lognormal":
    Karras et al. 2022, Sec. 5; "logit_normal": t = sigmoid(mean + std·n) of Esser et al. 2024,
    Eq. 19, whose σ = t/(1 − t) is exactly this, drawn without rounding t near 1)."""
    if cfg.sigma_sampler == "uniform":
        return schedule.sigmas[draw_timesteps(batch_size, schedule.num_timesteps, generator)]
    mean, std = normal_parameters(cfg, sigma_data)
    n = torch.randn(batch_size, generator=generator)
    return schedule.config.shift * (mean + std * n).exp()
