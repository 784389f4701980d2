"""Sampling grids: which timesteps a sampler visits, as decreasing σ values ending in an explicit σ = 0."""

import torch

from latentdiff.errors import UserError
from latentdiff.noise import NoiseSchedule

SPACINGS = ("uniform", "leading", "trailing")


def timesteps(num_timesteps: int, steps: int, spacing: str = "uniform") -> torch.Tensor:
    """`steps` integer timesteps in 0..T−1, decreasing.

    uniform: round(linspace(T−1, 0, steps)); leading: 0, T/steps, ... (DDIM / CompVis, diffusers' "leading" without
    offset); trailing: T−1, T−1−T/steps, ... (ends far from 0; Lin et al. 2024).
    """
    if not 1 <= steps <= num_timesteps:
        raise UserError(f"steps={steps} must be between 1 and the schedule length {num_timesteps}")
    if spacing == "uniform":
        ts = torch.linspace(num_timesteps - 1, 0, steps).round()
    elif spacing == "leading":
        ts = (torch.arange(steps) * (num_timesteps // steps)).flip(0).float()
    elif spacing == "trailing":
        ts = (torch.arange(num_timesteps, 0, -num_timesteps / steps).round() - 1)[:steps]
    else:
        raise UserError(f"spacing={spacing!r} is unknown; use one of {', '.join(SPACINGS)}")
    return ts.long()


def sigma_grid(schedule: NoiseSchedule, steps: int, spacing: str = "uniform") -> torch.Tensor:
    """σ at the chosen timesteps with a final 0 appended: (steps + 1,) float32, strictly decreasing."""
    sigmas = schedule.sigmas[timesteps(schedule.num_timesteps, steps, spacing)]
    return torch.cat([sigmas, sigmas.new_zeros(1)])
