"""Samplers: pure functions sample(denoiser, x_T, sigmas, *, cond, generator, callback) → x_0."""

from latentdiff.samplers.ancestral import sample_ddim, sample_ddpm
from latentdiff.samplers.grids import sigma_grid, timesteps

SAMPLERS = {"ddim": sample_ddim, "ddpm": sample_ddpm}

__all__ = ["SAMPLERS", "sample_ddim", "sample_ddpm", "sigma_grid", "timesteps"]
