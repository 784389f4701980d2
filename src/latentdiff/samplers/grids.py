"""Sampling grids: which noise levels a sampler visits, as decreasing σ values ending in an explicit
σ = 0 (or, with final="t0", at σ of timestep 0: CompVis's DDIM/PLMS and diffusers'
set_alpha_to_one=False stop at ᾱ_0, not ᾱ = 1).

Timestep spacings pick integer timesteps of the training schedule (the discrete model is evaluated
exactly where it was trained); σ spacings pick any σ in [σ_min, σ_max] of the schedule (the denoiser
interpolates t in log σ):
- karras: σ_i = (σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ (Karras et al. 2022, Eq. 5;
  ρ = 7);
- exponential: log σ uniform = uniform in log-SNR (log SNR = −2 log σ), DPM-Solver's "logSNR" grid.
"""

import torch

from latentdiff.errors import UserError
from latentdiff.noise import NoiseSchedule

TIMESTEP_SPACINGS = ("uniform", "leading", "compvis", "trailing", "linspace", "lcm")
SIGMA_SPACINGS = ("karras", "exponential")
SPACINGS = TIMESTEP_SPACINGS + SIGMA_SPACINGS
FINALS = ("zero", "t0")


def check_steps(steps: int, num_timesteps: int) -> None:
    """A one-line error unless 1 ≤ steps ≤ the timesteps of the chain sampled (the schedule's T, or
    t_trunc + 1 of a truncated chain)."""
    if not 1 <= steps <= num_timesteps:
        raise UserError(f"steps={steps} must be between 1 and {num_timesteps}, the timesteps of "
                        "the chain it samples (a truncated chain has t_trunc + 1)")


def timesteps(num_timesteps: int, steps: int, spacing: str = "uniform",
              original_steps: int = 50) -> torch.Tensor:
    """`steps` integer timesteps in 0..T−1, decreasing.

    uniform: round(linspace(T−1, 0, steps)); leading: 0, T/steps, ... (diffusers' "leading" without
    offset); compvis: leading + 1 (the CompVis DDIM/PLMS timesteps 1, 1 + T/steps, ...; diffusers'
    "leading" with steps_offset=1, as Stable Diffusion's scheduler config and pipeline set it);
    trailing: T−1, T−1−T/steps, ... (ends far from 0; Lin et al. 2024); linspace: diffusers'
    "linspace", round(linspace(0, T−1, steps + 1)) without its 0 (the last step jumps from
    t ≈ T/steps to σ = 0); lcm: the latent consistency model's, `steps` of the `original_steps`
    skipping-step timesteps k·i − 1 (k = T // original_steps, i = 1 … original_steps) a student was
    distilled on, at the indices ⌊j·original_steps/steps⌋ from the top (diffusers' LCMScheduler).
    """
    check_steps(steps, num_timesteps)
    if spacing == "uniform":
        ts = torch.linspace(num_timesteps - 1, 0, steps).round()
    elif spacing in ("leading", "compvis"):
        ts = (torch.arange(steps) * (num_timesteps // steps) + (spacing == "compvis")).flip(0).float()
    elif spacing == "linspace":
        ts = torch.linspace(0, num_timesteps - 1, steps + 1, dtype=torch.float64).round().flip(0)[:-1]
    elif spacing == "lcm":
        if not 1 <= steps <= original_steps <= num_timesteps:
            raise UserError(f"steps={steps} must be between 1 and the {original_steps} timesteps "
                            "the consistency model was distilled on (spacing lcm)")
        origin = (torch.arange(original_steps, 0, -1) * (num_timesteps // original_steps) - 1)
        ts = origin[torch.arange(steps) * original_steps // steps].float()
    elif spacing == "trailing":
        ts = (torch.arange(num_timesteps, 0, -num_timesteps / steps).round() - 1)[:steps]
    else:
        raise UserError(f"spacing={spacing!r} is unknown; use one of {', '.join(SPACINGS)}")
    return ts.long()


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022, Eq. 5: (steps,) float64, from σ_max down to σ_min."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    return (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def exponential_sigmas(sigma_min: float, sigma_max: float, steps: int) -> torch.Tensor:
    """log σ uniform from σ_max down to σ_min: (steps,) float64."""
    return torch.linspace(torch.tensor(sigma_max).log(), torch.tensor(sigma_min).log(), steps,
                          dtype=torch.float64).exp()


def sigma_grid(schedule: NoiseSchedule, steps: int, spacing: str = "uniform", rho: float = 7.0,
               final: str = "zero", original_steps: int = 50,
               t_max: int | None = None) -> torch.Tensor:
    """σ at the chosen steps, then the final σ: 0 (final="zero") or σ of timestep 0,
    σ_min = √((1 − ᾱ_0)/ᾱ_0) (final="t0"; e.g. 0.029 for Stable Diffusion's schedule; not repeated
    when the last step is already there). (steps + 1,) or (steps,) float32, strictly decreasing.
    `original_steps`: the lcm spacing's distillation grid. `t_max`: the chain truncated at that
    timestep (TDPM's T_trunc, `truncation.py`): the grid of the schedule's first t_max + 1 timesteps,
    starting at σ_{t_max} (default: the whole chain, T − 1)."""
    if final not in FINALS:
        raise UserError(f"final={final!r} is unknown; use zero (σ = 0) or t0 (σ of timestep 0, as "
                        "CompVis's DDIM)")
    length = schedule.num_timesteps if t_max is None else t_max + 1
    if not 1 <= length <= schedule.num_timesteps:
        raise UserError(f"t_max={t_max} must be in 0 … {schedule.num_timesteps - 1}")
    if spacing in SIGMA_SPACINGS:
        check_steps(steps, length)
        lo, hi = float(schedule.sigmas[0]), float(schedule.sigmas[length - 1])
        if steps == 1:
            sigmas = torch.tensor([hi], dtype=torch.float64)
        elif spacing == "karras":
            sigmas = karras_sigmas(lo, hi, steps, rho)
        else:
            sigmas = exponential_sigmas(lo, hi, steps)
        sigmas = sigmas.float()
    else:
        sigmas = schedule.sigmas[timesteps(length, steps, spacing, original_steps)]
    end = sigmas.new_zeros(1) if final == "zero" else schedule.sigmas[:1].to(sigmas)
    return sigmas if end >= sigmas[-1] * (1 - 1e-6) else torch.cat([sigmas, end])


def check_grid(sigmas: torch.Tensor) -> None:
    """One-line errors for a grid samplers cannot use: it must be 1-D, finite, ≥ 0 and strictly
    decreasing. It ends at 0 (a clean sample) or above (the sample at that noise level, e.g.
    final="t0" grids)."""
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise UserError(f"a σ grid needs at least 2 values (got shape {tuple(sigmas.shape)})")
    if not torch.isfinite(sigmas).all() or (sigmas < 0).any():
        raise UserError("a σ grid must hold finite values ≥ 0")
    if not (sigmas[1:] < sigmas[:-1]).all():
        raise UserError(f"a σ grid must be strictly decreasing (got {sigmas[:6].tolist()}…)")


def img2img_grid(sigmas: torch.Tensor, strength: float, steps: int) -> torch.Tensor:
    """The tail of a `sigma_grid` of `steps` steps that SDEdit runs (Meng et al. 2022): its last
    max(1, round(strength · steps)) steps, from the grid's noise level at `strength` (1: all of it)
    to its end."""
    if not 0.0 < strength <= 1.0:
        raise UserError(f"img2img strength {strength} must be in (0, 1]")
    return sigmas[max(0, len(sigmas) - 1 - max(1, round(strength * steps))):]
