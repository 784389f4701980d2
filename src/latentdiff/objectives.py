"""Training objectives: per-sample losses; reduction happens in the training loop."""

import torch

from latentdiff.conditioning import Cond
from latentdiff.denoiser import Denoiser
from latentdiff.noise import q_sample, training_target


# L_LDM = E_{z0, ε~N(0,I), t~U{1..T}} ‖target − net(z_t, t, y)‖² (paper Sec. 3.2; DDPM's L_simple with target ε, x0 or v)
def ddpm_loss(denoiser: Denoiser, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
              cond: Cond | None = None) -> torch.Tensor:
    """x0, noise: (B, c, h, w) latents and ε; t: (B,) integer timesteps (drawn by the caller) → (B,) loss."""
    alpha_bar = denoiser.schedule.alpha_bar(t)
    output = denoiser.network_output(q_sample(x0, alpha_bar, noise), t, cond)
    target = training_target(denoiser.prediction, x0, noise, alpha_bar)
    return (output.float() - target.float()).pow(2).flatten(1).mean(1)


def draw_timesteps(batch_size: int, num_timesteps: int, generator: torch.Generator) -> torch.Tensor:
    """t ~ U{0..T−1} (the paper's U{1..T}), (B,) int64 on the CPU."""
    return torch.randint(0, num_timesteps, (batch_size,), generator=generator)
