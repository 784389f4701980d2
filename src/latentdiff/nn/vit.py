"""Building blocks of the vision-transformer backbones (U-ViT, DiT): latent patches ↔ tokens, fixed
2-D sin-cos positions, multi-head self-attention and the MLP.

Module names mirror the original ViT code that DiT and U-ViT build on: `proj` (the patch conv),
`attn.qkv`, `attn.proj`, `mlp.fc1`, `mlp.fc2`.
"""

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """(B, C, H, W) → (B, h·w, D) row-major tokens of the h × w = (H/p) × (W/p) patch grid: a p×p
    stride-p conv (`proj`), i.e. a linear map of each non-overlapping patch (Dosovitskiy et al. 2021),
    plus the fixed 2-D sin-cos position of each patch. Returns the tokens and (h, w); a ValueError
    unless p divides H and W."""

    def __init__(self, in_channels: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        p = self.proj.stride[0]
        h, w = x.shape[2] // p, x.shape[3] // p
        if (h * p, w * p) != tuple(x.shape[2:]):
            raise ValueError(f"the latent's sides {tuple(x.shape[2:])} must be divisible by "
                             f"patch_size={p}")
        positions = sincos_positions(self.proj.out_channels, h, w, x.device).to(x.dtype)
        return self.proj(x).flatten(2).transpose(1, 2) + positions, (h, w)


def unpatchify(tokens: torch.Tensor, h: int, w: int, patch_size: int) -> torch.Tensor:
    """(B, h·w, p·p·C) row-major patch tokens, each laid out [p_row][p_col][C] → (B, C, h·p, w·p)."""
    b, p = tokens.shape[0], patch_size
    x = tokens.reshape(b, h, w, p, p, -1)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(b, -1, h * p, w * p)


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(N,) positions → (N, dim): [sin(pos·ω_i), cos(pos·ω_i)], ω_i = 10000^(−i/(dim/2)) (Vaswani
    et al. 2017)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64, device=positions.device)
                            / (dim / 2))
    args = positions.double()[:, None] * omega[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def sincos_positions(dim: int, h: int, w: int, device=None) -> torch.Tensor:
    """(h·w, dim) row-major fixed 2-D positions of an h × w token grid: the first dim/2 channels
    encode the column, the last dim/2 the row, each by `sincos_1d` (MAE's and DiT's layout)."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos positions need a width divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                                indexing="ij")
    return torch.cat([sincos_1d(dim // 2, cols.flatten()), sincos_1d(dim // 2, rows.flatten())],
                     dim=1).float()


class Attention(nn.Module):
    """Multi-head self-attention softmax(QKᵀ/√d)·V over tokens (B, N, D), Q, K, V from one `qkv`
    linear laid out [q|k|v][head][channel], output through `proj`. `key_mask` (B, N) bool: the
    tokens that may be attended to (context padding is False)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        # (3, B, H, N, d/H)
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, N)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(h.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """x ↦ fc2(GELU(fc1(x))), hidden width `hidden` (`approximate` "tanh": DiT's GELU)."""

    def __init__(self, dim: int, hidden: int, approximate: str = "none"):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Adaptive LayerNorm's affine step x·(1 + γ) + β for tokens x (B, N, D) and (B, D) γ, β."""
    return x * (1 + scale[:, None]) + shift[:, None]
