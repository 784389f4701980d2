"""Training objectives (paper Sec. 3.2) as weighted denoising losses on the same D(x; σ) that sampling uses.

L = E_{z_0, n ~ N(0, I), σ} λ(σ)·‖D(z_0 + σ·n; σ, y) − z_0‖² (Karras et al. 2022, Eq. 2 and 8). With λ = 1/c_out(σ)²
this is the network-output MSE ‖F_θ − F_target‖² of the preconditioning: for the paper's ε-prediction
λ = 1/σ² and the loss is DDPM's L_simple ‖ε̂ − ε‖² (the paper's L_LDM); x0- and v-prediction give ‖x̂₀ − z_0‖² and
‖v̂ − v‖². Losses are per sample; reduction happens in the training loop; randomness is passed in.
"""

import torch

from latentdiff.conditioning import Cond
from latentdiff.denoiser import Denoiser
from latentdiff.preconditioning import append_dims


def denoising_loss(denoiser: Denoiser, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                   weight: torch.Tensor, cond: Cond | None = None) -> torch.Tensor:
    """λ(σ)·mean ‖D(x0 + σ·n; σ) − x0‖² per sample. x0, noise: (B, c, h, w); sigma, weight: (B,) → (B,) float32."""
    x0 = x0.float()
    denoised = denoiser(x0 + append_dims(sigma, x0) * noise.float(), sigma, cond)
    return weight.float() * (denoised.float() - x0).pow(2).flatten(1).mean(1)


def simple_weight(denoiser: Denoiser, sigma: torch.Tensor) -> torch.Tensor:
    """λ(σ) = 1/c_out(σ)²: the loss on the network's own output (L_simple for ε-prediction). (B,) → (B,)."""
    return denoiser.precond.c_out(sigma).float().pow(-2)


def ddpm_loss(denoiser: Denoiser, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
              cond: Cond | None = None) -> torch.Tensor:
    """L_LDM (paper Eq. 2 in the latent; DDPM's L_simple for the configured target ε, x0 or v) at integer timesteps
    t (B,) of the denoiser's discrete schedule: σ = σ_t, λ = 1/c_out². x0, noise: (B, c, h, w) → (B,)."""
    sigma = denoiser.precond.schedule.sigmas.to(t.device)[t]
    return denoising_loss(denoiser, x0, sigma, noise, simple_weight(denoiser, sigma), cond)


def draw_timesteps(batch_size: int, num_timesteps: int, generator: torch.Generator) -> torch.Tensor:
    """t ~ U{0..T−1} (the paper's U{1..T}), (B,) int64 on the CPU."""
    return torch.randint(0, num_timesteps, (batch_size,), generator=generator)
