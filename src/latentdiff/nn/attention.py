"""Self-attention blocks on `F.scaled_dot_product_attention`: softmax(QKᵀ/√d)·V.

Module names and weight shapes mirror the original checkpoints (1×1 convs), computed as GEMMs on
tokens.
"""

import torch
import torch.nn.functional as F
from torch import nn

from latentdiff.nn.layers import group_norm, pointwise, zero_module


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # (B, C, H, W) → (B, HW, C)


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention of the first stage's mid block (original `AttnBlock`):
    x + proj_out(attn(GN(x))).

    Keys: norm, q, k, v, proj_out (1×1 Conv2d). x: (B, C, H, W) → same shape.
    """

    def __init__(self, channels: int, norm_groups: int = 32):
        super().__init__()
        self.norm = group_norm(channels, eps=1e-6, groups=norm_groups)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _to_tokens(self.norm(x))  # (B, HW, C)
        # (B, 1, HW, C)
        q, k, v = (pointwise(h, conv)[:, None] for conv in (self.q, self.k, self.v))
        h = pointwise(F.scaled_dot_product_attention(q, k, v)[:, 0], self.proj_out)
        return x + h.transpose(1, 2).reshape(x.shape)


class AttentionBlock(nn.Module):
    """Multi-head self-attention of the UNet (original `AttentionBlock`, legacy head order).

    Keys: norm, qkv (Conv1d C→3C), proj_out (zero-initialised Conv1d). The qkv channels are laid out
    [head][q|k|v][head channel], as `QKVAttentionLegacy` reads them. x: (B, C, *spatial) → same
    shape.
    """

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        qkv = pointwise(_to_tokens(self.norm(x)), self.qkv)  # (B, T, 3C)
        # (3, B, H, T, d)
        qkv = qkv.view(b, -1, self.num_heads, 3, c // self.num_heads).permute(3, 0, 2, 1, 4)
        h = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, H, T, d)
        h = pointwise(h.transpose(1, 2).reshape(b, -1, c), self.proj_out)  # (B, T, C)
        return x + h.transpose(1, 2).reshape(x.shape)
