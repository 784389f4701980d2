"""The KL-regularised autoencoder (paper Sec. 3.1): a diagonal Gaussian posterior
q_E(z|x) = N(μ, σ²)."""

import torch
from torch import nn

from latentdiff.autoencoder.networks import Decoder, Encoder
from latentdiff.autoencoder.pyramid import project, pyramid_noise
from latentdiff.config import AutoencoderConfig


class DiagonalGaussian:
    """q(z|x) from the `quant_conv` moments (B, 2c, h, w) = [μ, log σ²]; log σ² clamped to [−30, 20]
    as the original. With a feature pyramid of `num_levels` > 1 levels, μ and log σ² are projected
    onto it and samples keep its structure (`pyramid.py`)."""

    def __init__(self, moments: torch.Tensor, num_levels: int = 1):
        mean, logvar = moments.chunk(2, dim=1)
        self.num_levels = num_levels
        self.mean = project(mean, num_levels)
        self.logvar = project(logvar, num_levels).clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """z = μ + σ·n for a given standard normal `noise` (B, c, h, w) (explicit noise:
        reproducible, rank-safe; one draw per block of a pyramid level)."""
        return self.mean + self.std * pyramid_noise(noise, self.num_levels)

    def kl(self) -> torch.Tensor:
        """KL(q ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²) over (c, h, w) → (B,)."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


class AutoencoderKL(nn.Module):
    """x (B, C, H, W) in [-1, 1] ⇄ z (B, c, H/f, W/f). Keys: encoder.*, decoder.*, quant_conv,
    post_quant_conv."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.config = cfg
        c = cfg.latent_channels
        self.encoder = Encoder(cfg, out_channels=2 * c)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * c, 2 * c, 1)
        self.post_quant_conv = nn.Conv2d(c, c, 1)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.quant_conv(self.encoder(x)), self.config.pyramid_levels)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: torch.Tensor,
                noise: torch.Tensor | None = None) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Reconstruction D(z) with z sampled from the posterior using `noise`
        (the mean when None)."""
        posterior = self.encode(x)
        z = posterior.mean if noise is None else posterior.sample(noise)
        return self.decode(z), posterior
