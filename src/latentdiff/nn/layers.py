"""Normalization, zero-initialised layers and the sinusoidal timestep embedding."""

import math

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back (the original UNet's `GroupNorm32`): low-precision activations
    and weights keep full-precision statistics. A no-op cast in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = (None, None) if self.weight is None else (self.weight.float(), self.bias.float())
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).type(x.dtype)


def group_norm(channels: int, eps: float = 1e-5, groups: int = 32) -> GroupNorm32:
    """GroupNorm with 32 groups by default, as every block of the original models."""
    return GroupNorm32(groups, channels, eps=eps)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero the parameters of `module` (output layers of residual branches start as the identity)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def pointwise(x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """A 1×1 Conv1d/Conv2d applied as a matrix product on channel-last tokens: (..., C_in) → (..., C_out).

    Keeps the original checkpoints' conv weight shapes while running as one GEMM (faster than conv on CPU).
    """
    return F.linear(x, conv.weight.flatten(1), conv.bias)


# Sinusoidal timestep embedding (Vaswani et al. 2017) in the ADM / CompVis ordering [cos, sin].
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """t: (B,) timesteps, integer or fractional → (B, dim) = [cos(t·ω_i), sin(t·ω_i)], ω_i = max_period^(−i/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(embedding, (0, 1)) if dim % 2 else embedding
