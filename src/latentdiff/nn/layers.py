"""Normalization, zero-initialised layers, the sinusoidal timestep embedding and 2-D position
features."""

import math

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back (the original UNet's `GroupNorm32`):
    low-precision activations and weights keep full-precision statistics. A no-op cast in
    float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = (None, None) if self.weight is None else (self.weight.float(), self.bias.float())
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).type(x.dtype)


def group_norm(channels: int, eps: float = 1e-5, groups: int = 32) -> GroupNorm32:
    """GroupNorm with 32 groups by default, as every block of the original models."""
    return GroupNorm32(groups, channels, eps=eps)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero the parameters of `module` (output layers of residual branches start as the
    identity)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def pointwise(x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """A 1×1 Conv1d/Conv2d applied as a matrix product on channel-last tokens:
    (..., C_in) → (..., C_out).

    Keeps the original checkpoints' conv weight shapes while running as one GEMM (faster than conv
    on CPU).
    """
    return F.linear(x, conv.weight.flatten(1), conv.bias)


# Sinusoidal timestep embedding (Vaswani et al. 2017) in the ADM / CompVis ordering [cos, sin].
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0,
                       shift: int = 0) -> torch.Tensor:
    """t: (B,) timesteps, integer or fractional → (B, dim) = [cos(t·ω_i), sin(t·ω_i)],
    ω_i = max_period^(−i/(half − shift)) (shift 1: diffusers' `downscale_freq_shift`)."""
    half = dim // 2
    i = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * i / (half - shift))
    args = t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(embedding, (0, 1)) if dim % 2 else embedding


def minibatch_std(h: torch.Tensor, group: int = 4) -> torch.Tensor:
    """(B, C, H, W) → (B, C + 1, H, W): StyleGAN's minibatch standard deviation, the features' std
    over groups of up to `group` samples (averaged over C, H, W) as one more channel, so that a
    discriminator sees the variety of a batch."""
    b, c, hh, ww = h.shape
    g = math.gcd(group, b)
    std = h.view(g, -1, c, hh, ww).std(0, unbiased=False).mean((1, 2, 3))  # (B / g,)
    return torch.cat([h, std.repeat(g).view(b, 1, 1, 1).expand(b, 1, hh, ww)], 1)


def cell_centres(h: int, w: int, device=None, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, w) maps of the x and y of each cell centre of an h × w grid, in [−1, 1] across the
    grid."""
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=device, dtype=dtype)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=device, dtype=dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return grid_x, grid_y


def fourier_positions(h: int, w: int, frequencies: int, device=None, dtype=None) -> torch.Tensor:
    """(h·w, 4·frequencies) row-major: [sin(πkx), cos(πkx), sin(πky), cos(πky)] for k = 1 …
    frequencies, with x, y the cell centres in [−1, 1]: where a token lies relative to the whole
    grid, at any grid size."""
    grid_x, grid_y = cell_centres(h, w, device, torch.float32)
    k = torch.arange(1, frequencies + 1, device=device, dtype=torch.float32) * math.pi
    args = torch.stack([grid_x, grid_y], dim=-1).reshape(h * w, 2, 1) * k  # (hw, 2, F)
    features = torch.stack([args.sin(), args.cos()], dim=2)  # (hw, 2, 2, F)
    return features.reshape(h * w, 4 * frequencies).to(dtype)


def guidance_features(projection: nn.Module, guidance: torch.Tensor | float, dim: int,
                      batch: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, dim): the guidance scale s of a guided student as sinusoidal features of 1000·s through
    its zero-initialised projection, added to the timestep features (so a student starts as its
    teacher)."""
    scale = torch.as_tensor(guidance, device=projection.weight.device).expand(batch)
    return projection(timestep_embedding(1000 * scale, dim).to(dtype))


def network_input(cfg, x: torch.Tensor, context: torch.Tensor | None,
                  class_labels: torch.Tensor | None, concat: torch.Tensor | None,
                  guidance: torch.Tensor | None,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check what a denoiser network (any `NetworkConfig`) is given against what it was built for
    (a ValueError naming the field) and return x with the `concat` channels appended, and the
    context, both in the network's `dtype` (a half-precision network takes fp32 sampler state)."""
    if (context is not None) != (cfg.context_dim is not None):
        raise ValueError("context must be given exactly when the network has cross-attention "
                         "(context_dim)")
    if context is not None and context.shape[-1] != cfg.context_dim:
        raise ValueError(f"context width {context.shape[-1]} ≠ context_dim={cfg.context_dim}")
    if (class_labels is not None) != (cfg.num_classes is not None):
        raise ValueError("class_labels must be given exactly when the network is "
                         "class-conditional (num_classes)")
    if (guidance is not None) != cfg.guidance_embedding:
        raise ValueError("guidance must be given exactly when the network embeds the guidance "
                         "scale (guidance_embedding)")
    if concat is not None:
        x = torch.cat([x, concat.to(x.dtype)], dim=1)
    if x.shape[1] != cfg.in_channels:
        raise ValueError(f"the network takes {cfg.in_channels} input channels (latent + concat), "
                         f"got {x.shape[1]}")
    return x.to(dtype), None if context is None else context.to(dtype)
