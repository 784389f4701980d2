"""The only converter between pixels and the normalised latents the diffusion model sees (paper Sec.
4.3.2 and App. D.1, latent scaling).

Diffusion runs on ẑ = (z − shift)·scale, so that the latent has unit variance. The paper's global
form is shift = 0, scale = s = 1/std(z) over all elements; the per-channel form uses each channel's
mean and std. Both are measured on training latents and stored in checkpoints.
"""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LatentStats:
    """Normalisation of raw latents: shift and scale per channel (c,), as plain lists (they live in
    JSON metadata)."""

    shift: tuple[float, ...]
    scale: tuple[float, ...]

    def __post_init__(self):  # lists from JSON metadata → tuples
        object.__setattr__(self, "shift", tuple(float(v) for v in self.shift))
        object.__setattr__(self, "scale", tuple(float(v) for v in self.scale))

    @classmethod
    def global_scale(cls, scale_factor: float, channels: int) -> "LatentStats":
        return cls((0.0,) * channels, (float(scale_factor),) * channels)

    @classmethod
    @torch.no_grad()
    def measure(cls, z_raw: torch.Tensor, per_channel: bool = False) -> "LatentStats":
        """From raw latents (N, c, h, w): global s = 1/std(z) over all elements, or per channel
        (μ_c, 1/σ_c)."""
        z = z_raw.double()
        c = z.shape[1]
        if not per_channel:
            return cls.global_scale(1.0 / z.std().item(), c)
        per = z.transpose(0, 1).reshape(c, -1)
        return cls(tuple(per.mean(1).tolist()), tuple((1.0 / per.std(1)).tolist()))

    def to_dict(self) -> dict:
        return {"shift": list(self.shift), "scale": list(self.scale)}


class LatentCodec(nn.Module):
    """pixels (B, C, H, W) float in [-1, 1] ⇄ latents (B, c, H/f, W/f) normalised by `stats`."""

    def __init__(self, autoencoder: nn.Module, stats: LatentStats):
        super().__init__()
        self.autoencoder, self.stats = autoencoder, stats
        self.register_buffer("shift", torch.tensor(stats.shift).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(stats.scale).view(1, -1, 1, 1), persistent=False)

    @property
    def downsampling_factor(self) -> int:
        return self.autoencoder.config.downsampling_factor

    @property
    def latent_channels(self) -> int:
        return self.autoencoder.config.latent_channels

    def encode(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """ẑ of z ~ q(z|x) drawn with `noise`, or of the posterior mean when `noise` is None."""
        posterior = self.autoencoder.encode(x)
        return self.normalize(posterior.mean if noise is None else posterior.sample(noise))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents → pixels in [-1, 1] (clamped)."""
        return self.autoencoder.decode(self.denormalize(z)).clamp(-1.0, 1.0)

    def normalize(self, z_raw: torch.Tensor) -> torch.Tensor:
        """Raw autoencoder latents (e.g. cached posterior samples) → the diffusion model's scale."""
        return (z_raw - self.shift.to(z_raw)) * self.scale.to(z_raw)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.scale.to(z) + self.shift.to(z)
