"""The spatial transformer of conditioned LDMs (paper Sec. 3.3): cross-attention from image features
to a context τ_θ(y).

Module names mirror the original `ldm.modules.attention` so published checkpoints load by name:
SpatialTransformer: `norm`, `proj_in`, `transformer_blocks.{i}`, `proj_out`; BasicTransformerBlock:
`norm1`, `attn1` (self), `norm2`, `attn2` (cross), `norm3`, `ff.net.0.proj` (GEGLU), `ff.net.2`;
CrossAttention: `to_q`, `to_k`, `to_v` (no bias), `to_out.0`.
"""

import torch
import torch.nn.functional as F
from torch import nn

from latentdiff.nn.layers import fourier_positions, group_norm, zero_module


class CrossAttention(nn.Module):
    """softmax(Q Kᵀ/√d) V with Q = x W_q (B, N, query_dim), K, V = c W_k, c W_v (B, M, context_dim);
    H heads of d.

    Self-attention when no context is given (c = x). Returns (B, N, query_dim).
    """

    def __init__(self, query_dim: int, context_dim: int | None, num_heads: int,
                 head_dim: int, dropout: float = 0.0):
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads = num_heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """context_mask: (B, M) bool, True for tokens that may be attended to (padding is False)."""
        context = x if context is None else context
        b = x.shape[0]
        q, k, v = (proj(t).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, H, N|M, d)
                   for proj, t in ((self.to_q, x), (self.to_k, context), (self.to_v, context)))
        mask = None if context_mask is None else context_mask[:, None, None, :]  # (B, 1, 1, M)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out(h.transpose(1, 2).reshape(b, -1, q.shape[1] * q.shape[3]))


class GEGLU(nn.Module):
    """GEGLU(x) = a ⊙ GELU(g) with [a, g] = x W + b (Shazeer 2020): (…, dim) → (…, inner)."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """x ↦ W₂ GEGLU(x), inner width 4·dim (the original `FeedForward(glu=True)`, keys net.0.proj and
    net.2)."""

    def __init__(self, dim: int, dropout: float = 0.0, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, mult * dim), nn.Dropout(dropout),
                                 nn.Linear(mult * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """x ← x + SelfAttn(LN₁ x); x ← x + CrossAttn(LN₂ x, c); x ← x + FF(LN₃ x). x: (B, N, dim)."""

    def __init__(self, dim: int, num_heads: int, head_dim: int,
                 context_dim: int | None, dropout: float = 0.0):
        super().__init__()
        self.attn1 = CrossAttention(dim, None, num_heads, head_dim, dropout)
        self.ff = FeedForward(dim, dropout)
        self.attn2 = CrossAttention(dim, context_dim, num_heads, head_dim, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context, context_mask)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """x (B, C, H, W), context (B, M, context_dim) → x + proj_out(T × blocks(proj_in(GN(x)) as HW
    tokens)).

    proj_in/proj_out are 1×1 convs (LDM, SD 1.x) or, with `linear_projection`, Linear layers on
    tokens (SD 2.x); proj_out starts at zero, so a new block begins as the identity. Without context
    the cross-attention attends to the image tokens themselves (the original's behaviour when
    `context` is None). `position_frequencies` F > 0 adds W_pos·fourier(x, y) (`fourier_positions`,
    4F features of each token's place in the grid) to the tokens after proj_in, so that
    cross-attention queries know where they are (not in the original; `pos_embed`, absent for its
    checkpoints).
    """

    def __init__(self, channels: int, num_heads: int, head_dim: int, depth: int = 1,
                 context_dim: int | None = None, dropout: float = 0.0,
                 linear_projection: bool = False,
                 position_frequencies: int = 0):
        super().__init__()
        inner = num_heads * head_dim
        self.linear_projection, self.position_frequencies = linear_projection, position_frequencies
        if position_frequencies:
            self.pos_embed = nn.Linear(4 * position_frequencies, inner, bias=False)
        self.norm = group_norm(channels, eps=1e-6)
        make = (lambda i, o: nn.Linear(i, o)) if linear_projection else (lambda i, o: nn.Conv2d(i, o, 1))
        self.proj_in = make(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, num_heads, head_dim, context_dim, dropout)
            for _ in range(depth))
        self.proj_out = zero_module(make(inner, channels))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        tokens = self.norm(x)
        if self.linear_projection:
            tokens = self.proj_in(tokens.flatten(2).transpose(1, 2))
        else:
            tokens = self.proj_in(tokens).flatten(2).transpose(1, 2)  # (B, HW, inner)
        if self.position_frequencies:
            positions = fourier_positions(h, w, self.position_frequencies, x.device, tokens.dtype)
            tokens = tokens + self.pos_embed(positions)
        for block in self.transformer_blocks:
            tokens = block(tokens, context, context_mask)
        if self.linear_projection:
            out = self.proj_out(tokens).transpose(1, 2).reshape(b, -1, h, w)
        else:
            out = self.proj_out(tokens.transpose(1, 2).reshape(b, -1, h, w))
        return x + out
