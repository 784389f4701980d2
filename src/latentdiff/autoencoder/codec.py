"""The only converter between pixels and the normalised latents the diffusion model sees (SPEC §1, latent scaling).

Diffusion runs on z·s with s = 1/std(z) measured on training data, so the latent has unit variance.
"""

import torch
from torch import nn

from latentdiff.autoencoder.kl import AutoencoderKL


class LatentCodec(nn.Module):
    """pixels (B, C, H, W) float in [-1, 1] ⇄ latents (B, c, H/f, W/f) scaled by `scale_factor`."""

    def __init__(self, autoencoder: AutoencoderKL, scale_factor: float):
        super().__init__()
        self.autoencoder = autoencoder
        self.scale_factor = float(scale_factor)

    @property
    def downsampling_factor(self) -> int:
        return self.autoencoder.config.downsampling_factor

    @property
    def latent_channels(self) -> int:
        return self.autoencoder.config.latent_channels

    def encode(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """s·z with z ~ q(z|x) drawn with `noise`, or s·μ when `noise` is None."""
        posterior = self.autoencoder.encode(x)
        z = posterior.mean if noise is None else posterior.sample(noise)
        return z * self.scale_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents → pixels in [-1, 1] (clamped)."""
        return self.autoencoder.decode(z / self.scale_factor).clamp(-1.0, 1.0)

    def normalize(self, z_raw: torch.Tensor) -> torch.Tensor:
        """Raw autoencoder latents (e.g. cached posterior samples) → the diffusion model's scale."""
        return z_raw * self.scale_factor


@torch.no_grad()
def measure_scale_factor(z_raw: torch.Tensor) -> float:
    """s = 1 / std(z) over all elements of a set of raw latents (N, c, h, w)."""
    return 1.0 / z_raw.float().std().item()
