"""Encoder E and decoder D of the first stage (SPEC §1), shared by the KL and (later) VQ autoencoders.

Module names mirror the original `ldm.modules.diffusionmodules.model` so published weights load by name:
`conv_in`, `down.{level}.block.{i}`, `down.{level}.attn.{i}`, `down.{level}.downsample`, `mid.block_1/attn_1/block_2`,
`norm_out`, `conv_out`; the decoder has `up.{level}` with `num_res_blocks + 1` blocks, indexed by resolution level
(up.0 is full resolution).
"""

import torch
import torch.nn.functional as F
from torch import nn

from latentdiff.config import AutoencoderConfig
from latentdiff.nn.attention import SpatialSelfAttention


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """x ↦ shortcut(x) + conv2(drop(SiLU(GN(conv1(SiLU(GN(x))))))), a 1×1 `nin_shortcut` when channels change."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3×3 conv after asymmetric (0, 1, 0, 1) padding, as the original."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour interpolation, then a 3×3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid_block(channels: int, dropout: float) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, dropout)
    mid.attn_1 = SpatialSelfAttention(channels)
    mid.block_2 = ResnetBlock(channels, channels, dropout)
    return mid


def _run_mid(mid: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(h)))


def _run_blocks(stage: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """A level's ResnetBlocks, each followed by its attention block when the level has them."""
    for i, block in enumerate(stage.block):
        h = block(h)
        if len(stage.attn):
            h = stage.attn[i](h)
    return h


class Encoder(nn.Module):
    """E: x (B, in_channels, H, W) in [-1, 1] → (B, out_channels, H/f, W/f)."""

    def __init__(self, cfg: AutoencoderConfig, out_channels: int):
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        channels, resolution = cfg.base_channels, cfg.resolution
        for level, width in enumerate(widths):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                stage.block.append(ResnetBlock(channels, width, cfg.dropout))
                channels = width
                if resolution in cfg.attn_resolutions:
                    stage.attn.append(SpatialSelfAttention(channels))
            if level != len(widths) - 1:
                stage.downsample = Downsample(channels)
                resolution //= 2
            self.down.append(stage)
        self.mid = _mid_block(channels, cfg.dropout)
        self.norm_out = _norm(channels)
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            h = _run_blocks(stage, h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = _run_mid(self.mid, h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """D: z (B, latent_channels, h, w) → (B, in_channels, h·f, w·f), unbounded (trained towards [-1, 1])."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        channels = widths[-1]
        resolution = cfg.resolution // cfg.downsampling_factor
        self.conv_in = nn.Conv2d(cfg.latent_channels, channels, 3, padding=1)
        self.mid = _mid_block(channels, cfg.dropout)
        up = []
        for level in reversed(range(len(widths))):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                stage.block.append(ResnetBlock(channels, widths[level], cfg.dropout))
                channels = widths[level]
                if resolution in cfg.attn_resolutions:
                    stage.attn.append(SpatialSelfAttention(channels))
            if level != 0:
                stage.upsample = Upsample(channels)
                resolution *= 2
            up.insert(0, stage)
        self.up = nn.ModuleList(up)
        self.norm_out = _norm(channels)
        self.conv_out = nn.Conv2d(channels, cfg.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = _run_mid(self.mid, self.conv_in(z))
        for stage in reversed(self.up):
            h = _run_blocks(stage, h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))
