"""Loss weightings λ(σ) of the denoising loss λ(σ)·‖D(z_0 + σ·n; σ) − z_0‖² (`objectives.py`).

In this form a weighting is independent of what the network predicts; the prediction only sets
the "uniform" weighting λ = 1/c_out², under which the loss is the plain MSE of the network's own
output (ε: λ = SNR = 1/σ², x0: 1, v: SNR + 1, EDM: (σ² + σ_d²)/(σ·σ_d)², flow: (1 + σ)²/σ²).

- min-SNR-γ (Hang et al. 2023, Eq. 7–9): λ = min(SNR, γ). The paper's weights on the ε, x0 and v
  losses, min(SNR, γ)/SNR, min(SNR, γ) and min(SNR, γ)/(SNR + 1), are this one λ.
- soft-min-SNR (Crowson et al. 2024, Sec. 4): λ = 1/(σ² + 1/γ) = SNR·γ/(SNR + γ), a smooth
  min(SNR, γ).
- EDM (Karras et al. 2022, Eq. 8 and Table 1): λ = (σ² + σ_d²)/(σ·σ_d)², unit weight on the
  EDM-preconditioned network's output at every σ.
- learned (Karras et al. 2024, Sec. 5, Eq. 22): the per-σ loss L(σ) becomes L(σ)/e^u(σ) + u(σ) with
  u a small network of σ trained with the model; at its optimum e^u(σ) = E[L(σ)], so every σ
  contributes a loss of about 1 whatever its difficulty.
"""

import math

import torch
from torch import nn

from latentdiff.config import ObjectiveConfig
from latentdiff.preconditioning import EDMPreconditioning


def min_snr_weight(sigma: torch.Tensor, gamma: float) -> torch.Tensor:
    """λ = min(1/σ², γ); sigma (B,) → (B,)."""
    return sigma.pow(-2).clamp(max=gamma)


def soft_min_snr_weight(sigma: torch.Tensor, gamma: float) -> torch.Tensor:
    """λ = 1/(σ² + 1/γ); sigma (B,) → (B,)."""
    return 1 / (sigma ** 2 + 1 / gamma)


def edm_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """λ = (σ² + σ_d²)/(σ·σ_d)² = 1/c_out² of EDM's preconditioning; sigma (B,) → (B,)."""
    return EDMPreconditioning(sigma_data).c_out(sigma).pow(-2)


def loss_weight(cfg: ObjectiveConfig, sigma: torch.Tensor, sigma_data: float) -> torch.Tensor | None:
    """λ(σ) of the configured weighting (B,); None for "uniform" (λ = 1/c_out², which
    `denoising_loss` applies exactly)."""
    if cfg.weighting == "min_snr":
        return min_snr_weight(sigma, cfg.gamma)
    if cfg.weighting == "soft_min_snr":
        return soft_min_snr_weight(sigma, cfg.gamma)
    if cfg.weighting == "edm":
        return edm_weight(sigma, sigma_data)
    return None


class LearnedLogVariance(nn.Module):
    """u(σ): fixed random Fourier features cos(2π(f·¼ln σ + φ)), f ~ N(0, 1), φ ~ U[0, 1) (Karras et
    al. 2024 use ¼ ln σ, EDM's c_noise, and 128 features), then one linear layer, zero at the start
    (u = 0: the weighting λ alone). sigma (B,) → u (B,) float32."""

    def __init__(self, channels: int = 128, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(channels, generator=generator))
        self.register_buffer("phases", torch.rand(channels, generator=generator))
        self.linear = nn.Linear(channels, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        c_noise = sigma.float().log().unsqueeze(1) / 4
        features = torch.cos(2 * math.pi * (c_noise * self.freqs + self.phases)) * math.sqrt(2)
        return self.linear(features).squeeze(1)


def with_learned_variance(loss: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """L/e^u + u per sample (B,): minimised over u at e^u = L."""
    return loss / u.exp() + u
