"""Pixel space as a first stage (f = 1, no compression): the paper's LDM-1, i.e. a plain pixel-space
diffusion model.

With `model.regularizer = "none"` the "autoencoder" is the identity: z = x (c = C channels, H × W),
no weights, and a posterior with zero variance. Everything downstream (training, samplers,
checkpoints, `latentdiff eval`) is unchanged, which is what makes pixel-space and latent diffusion
comparable like for like (paper Sec. 4.1).
"""

import torch
from torch import nn

from latentdiff.config import AutoencoderConfig


class PointPosterior:
    """A posterior with all its mass at `mean` (B, c, h, w): sampling returns the mean, the KL term
    is zero."""

    def __init__(self, mean: torch.Tensor):
        self.mean = mean
        self.std = torch.zeros_like(mean)

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        return self.mean.new_zeros(self.mean.shape[0])


class PixelSpace(nn.Module):
    """x (B, C, H, W) in [-1, 1] ⇄ z = x: encode and decode are the identity."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.config = cfg

    @classmethod
    def of_channels(cls, channels: int) -> "PixelSpace":
        return cls(pixel_space_config(channels))

    def encode(self, x: torch.Tensor) -> PointPosterior:
        return PointPosterior(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z


def pixel_space_config(channels: int) -> AutoencoderConfig:
    """The config a pixel-space first stage is stored with: f = 1 (one level), c = C."""
    return AutoencoderConfig(in_channels=channels, latent_channels=channels,
                             channel_mult=(1,), regularizer="none",
                             base_channels=32, norm_groups=1)
