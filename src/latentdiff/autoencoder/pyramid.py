"""A feature pyramid of latents (Frido; Fan et al., AAAI 2023, Sec. 3.1): the first stage's
latent channels split into L levels, coarsest first, level ℓ living at 1/2^(L−1−ℓ) of the latent
resolution.

Every level is kept in one tensor z (B, c, h, w) at the finest resolution: the c/L channels of
level ℓ are constant over blocks of k_ℓ × k_ℓ positions, k_ℓ = 2^(L−1−ℓ) (the coarse latent
nearest-upsampled, as Frido concatenates its levels), so the latent cache, the codec and the
denoisers see an ordinary latent; `project` is the orthogonal projection onto that subspace
(block means), `levels` / `from_levels` convert to and from each level at its own size. With
L = 1 everything here is the identity.
"""

import torch
from torch.nn import functional as F


def block_sizes(num_levels: int) -> list[int]:
    """k_ℓ = 2^(L−1−ℓ) for ℓ = 0 … L−1 (the coarsest level first)."""
    return [2 ** (num_levels - 1 - level) for level in range(num_levels)]


def level_channels(channels: int, num_levels: int, level: int) -> slice:
    """The channel slice of `level` in a latent of `channels` channels."""
    per = channels // num_levels
    return slice(level * per, (level + 1) * per)


def blocks(part: torch.Tensor, k: int, scale: bool = False) -> torch.Tensor:
    """(B, c', h, w) → its k × k block means nearest-upsampled back to h × w (the projection onto
    block-constant latents), times k when `scale` (block means of i.i.d. N(0, 1) noise → noise that
    is again N(0, 1) per value, one draw per block)."""
    if k == 1:
        return part
    out = F.interpolate(F.avg_pool2d(part, k), scale_factor=k, mode="nearest")
    return out * k if scale else out


def _blockwise(z: torch.Tensor, num_levels: int, scale: bool) -> torch.Tensor:
    return torch.cat([blocks(z[:, level_channels(z.shape[1], num_levels, level)], k, scale)
                      for level, k in enumerate(block_sizes(num_levels))], 1)


def project(z: torch.Tensor, num_levels: int) -> torch.Tensor:
    """(B, c, h, w) → the same with every level's channels replaced by their block means: the
    nearest latent with the pyramid's structure."""
    return _blockwise(z, num_levels, scale=False)


def pyramid_noise(noise: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Standard normal noise (B, c, h, w) → noise with the pyramid's structure whose every value is
    still standard normal: a k × k block mean of i.i.d. N(0, 1) has variance 1/k², so it is
    scaled by k (one independent draw per block of each level)."""
    return _blockwise(noise, num_levels, scale=True)


def levels(z: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """z (B, c, h, w) → each level at its own size, (B, c/L, h/k_ℓ, w/k_ℓ), the coarsest first."""
    return [F.avg_pool2d(z[:, level_channels(z.shape[1], num_levels, level)], k) if k > 1
            else z[:, level_channels(z.shape[1], num_levels, level)]
            for level, k in enumerate(block_sizes(num_levels))]


def from_levels(parts: list[torch.Tensor]) -> torch.Tensor:
    """The inverse of `levels`: the levels nearest-upsampled to the finest and concatenated."""
    sizes = block_sizes(len(parts))
    return torch.cat([F.interpolate(p, scale_factor=k, mode="nearest") if k > 1 else p
                      for p, k in zip(parts, sizes)], 1)
