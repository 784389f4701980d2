"""The 2-D Haar wavelet transform and Spectral Diffusion's wavelet-gated resampling (Yang et al.,
"Diffusion Probabilistic Model Made Slim", CVPR 2023, Sec. 4.1).

A slim denoiser is biased against high frequencies, and which frequencies matter changes with the
noise level; wavelet gating resamples through the Haar subbands, each weighted by channel gates
computed from the features and the timestep embedding, so every level chooses per step how much of
each frequency band passes.
"""

import torch
from torch import nn


def haar_dwt(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W), H and W even → (B, 4, C, H/2, W/2): the orthonormal one-level Haar subbands
    LL, LH, HL, HH. With a, b the top and c, d the bottom pixels of each 2×2 block:
    LL = (a + b + c + d)/2, LH = (a − b + c − d)/2 (horizontal detail), HL = (a + b − c − d)/2
    (vertical detail), HH = (a − b − c + d)/2."""
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return torch.stack([a + b + c + d, a - b + c - d, a + b - c - d, a - b - c + d], dim=1) / 2


def haar_idwt(bands: torch.Tensor) -> torch.Tensor:
    """(B, 4, C, h, w) subbands → (B, C, 2h, 2w): the exact inverse of `haar_dwt` (the transform is
    orthonormal, so its inverse is its transpose)."""
    ll, lh, hl, hh = bands.unbind(1)
    b, c, h, w = ll.shape
    out = ll.new_empty(b, c, 2 * h, 2 * w)
    out[..., 0::2, 0::2] = (ll + lh + hl + hh) / 2
    out[..., 0::2, 1::2] = (ll - lh + hl - hh) / 2
    out[..., 1::2, 0::2] = (ll + lh - hl - hh) / 2
    out[..., 1::2, 1::2] = (ll - lh - hl + hh) / 2
    return out


class SubbandGates(nn.Module):
    """g = sigmoid(W·[mean-pooled features, SiLU(emb)] + b): (B, 4, C, 1, 1) channel gates of the
    four subbands from (B, k, C) pooled features and the (B, E) timestep embedding. W starts at zero
    and b at logit 0.9 for LL, logit 0.1 for the details, so a gated resampling starts near the
    plain one (average pooling, nearest upsampling, both ×2) with a little of each detail band."""

    def __init__(self, pooled: int, emb_channels: int, channels: int):
        super().__init__()
        self.channels = channels
        self.proj = nn.Linear(pooled + emb_channels, 4 * channels)
        nn.init.zeros_(self.proj.weight)
        with torch.no_grad():
            self.proj.bias.view(4, channels).copy_(torch.tensor([2.1972, -2.1972, -2.1972, -2.1972])[:, None])

    def forward(self, pooled: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        features = torch.cat([pooled.flatten(1), nn.functional.silu(emb)], dim=1)
        return torch.sigmoid(self.proj(features)).view(-1, 4, self.channels, 1, 1)


class WaveletDownsample(nn.Module):
    """WG-Down: (B, C, H, W) → (B, C, H/2, W/2) = conv3×3(Σ_k g_k ⊙ DWT(x)_k), the gates g from
    each subband's spatial mean and the timestep embedding: the learned, noise-level dependent
    choice of which frequencies pass to the coarser level. Without `conv` (the UNet's
    conv_resample off) the gated sum is the output, as the plain resampling is then pooling."""

    def __init__(self, channels: int, emb_channels: int, conv: bool = True):
        super().__init__()
        self.gates = SubbandGates(4 * channels, emb_channels, channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if conv else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        bands = haar_dwt(x)  # (B, 4, C, H/2, W/2)
        g = self.gates(bands.mean(dim=(-2, -1)), emb)
        return self.conv((g * bands).sum(dim=1))


class WaveletUpsample(nn.Module):
    """WG-Up: (B, C, h, w) → (B, C, 2h, 2w) = conv3×3(IDWT(g_LL ⊙ x, g_LH ⊙ x, g_HL ⊙ x, g_HH ⊙
    x)): the features become all four subbands of the finer level, each through its gates (from the
    features' spatial mean and the timestep embedding). Without `conv`, the IDWT is the output."""

    def __init__(self, channels: int, emb_channels: int, conv: bool = True):
        super().__init__()
        self.gates = SubbandGates(channels, emb_channels, channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if conv else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        g = self.gates(x.mean(dim=(-2, -1)), emb)  # (B, 4, C, 1, 1)
        return self.conv(haar_idwt(g * x[:, None]))
