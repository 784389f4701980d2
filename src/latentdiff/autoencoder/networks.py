"""Encoder E and decoder D of the first stage (paper Sec. 3.1), shared by the KL and (later) VQ
autoencoders.

Module names mirror the original `ldm.modules.diffusionmodules.model` so published weights load by
name: `conv_in`, `down.{level}.block.{i}`, `down.{level}.attn.{i}`, `down.{level}.downsample`,
`mid.block_1/attn_1/block_2`, `norm_out`, `conv_out`; the decoder has `up.{level}` with
`num_res_blocks + 1` blocks, indexed by resolution level (up.0 is full resolution).
"""

import torch
import torch.nn.functional as F
from torch import nn

from latentdiff.config import AutoencoderConfig
from latentdiff.nn.attention import SpatialSelfAttention


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """x ↦ shortcut(x) + conv2(drop(SiLU(GN(conv1(SiLU(GN(x))))))), a 1×1 `nin_shortcut` when
    channels change."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0,
                 norm_groups: int = 32):
        super().__init__()
        self.norm1 = _norm(in_channels, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels, norm_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = (nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels
                             else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3×3 conv after asymmetric (0, 1, 0, 1) padding, as the
    original.

    With `shortcut`, the 2×2 average of x is added (DC-AE's space-to-channel + channel-averaging
    shortcut).
    """

    def __init__(self, channels: int, shortcut: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(F.pad(x, (0, 1, 0, 1)))
        return h + F.avg_pool2d(x, 2) if self.shortcut else h


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour interpolation, then a 3×3 conv (plus the interpolated x
    with `shortcut`)."""

    def __init__(self, channels: int, shortcut: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        h = self.conv(x)
        return h + x if self.shortcut else h


def channel_group_average(wide: int, narrow: int) -> torch.Tensor:
    """(narrow, wide, 1, 1) 1×1-conv weight averaging `wide` channels in `narrow` consecutive,
    near-equal groups.

    Its 0/1 transpose duplicates `narrow` channels back to `wide`. These are DC-AE's parameter-free
    latent shortcuts (Chen et al. 2024, "residual autoencoding"), generalised to channel counts that
    do not divide.
    """
    group = torch.arange(wide) * narrow // wide
    weight = F.one_hot(group, narrow).T.float()
    return (weight / weight.sum(1, keepdim=True))[:, :, None, None]


def _mid_block(channels: int, cfg: AutoencoderConfig) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, cfg.dropout, cfg.norm_groups)
    mid.attn_1 = SpatialSelfAttention(channels, cfg.norm_groups) if cfg.mid_attention else nn.Identity()
    mid.block_2 = ResnetBlock(channels, channels, cfg.dropout, cfg.norm_groups)
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
                stage.block.append(ResnetBlock(channels, width, cfg.dropout, cfg.norm_groups))
                channels = width
                if resolution in cfg.attn_resolutions:
                    stage.attn.append(SpatialSelfAttention(channels, cfg.norm_groups))
            if level != len(widths) - 1:
                stage.downsample = Downsample(channels, cfg.residual_shortcuts)
                resolution //= 2
            self.down.append(stage)
        self.mid = _mid_block(channels, cfg)
        self.norm_out = _norm(channels, cfg.norm_groups)
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)
        # Shortcut to the first `latent_channels` outputs (the KL mean, or the VQ latents); not a
        # state-dict entry.
        shortcut = channel_group_average(channels, cfg.latent_channels) if cfg.residual_shortcuts else None
        self.register_buffer("latent_shortcut", shortcut, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            h = _run_blocks(stage, h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = _run_mid(self.mid, h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        if self.latent_shortcut is None:
            return out
        latent = out[:, : self.latent_shortcut.shape[0]] + F.conv2d(h, self.latent_shortcut.to(h.dtype))
        return torch.cat([latent, out[:, latent.shape[1]:]], 1)


class Decoder(nn.Module):
    """D: z (B, latent_channels, h, w) → (B, in_channels, h·f, w·f), unbounded (trained towards [-1,
    1])."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        channels = widths[-1]
        resolution = cfg.resolution // cfg.downsampling_factor
        self.conv_in = nn.Conv2d(cfg.latent_channels, channels, 3, padding=1)
        self.mid = _mid_block(channels, cfg)
        up = []
        for level in reversed(range(len(widths))):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                stage.block.append(ResnetBlock(channels, widths[level],
                                               cfg.dropout, cfg.norm_groups))
                channels = widths[level]
                if resolution in cfg.attn_resolutions:
                    stage.attn.append(SpatialSelfAttention(channels, cfg.norm_groups))
            if level != 0:
                stage.upsample = Upsample(channels, cfg.residual_shortcuts)
                resolution *= 2
            up.insert(0, stage)
        self.up = nn.ModuleList(up)
        self.norm_out = _norm(channels, cfg.norm_groups)
        self.conv_out = nn.Conv2d(channels, cfg.in_channels, 3, padding=1)
        shortcut = channel_group_average(widths[-1], cfg.latent_channels) if cfg.residual_shortcuts else None
        duplicate = None if shortcut is None else (shortcut > 0).float().transpose(0, 1)
        self.register_buffer("latent_shortcut", duplicate, persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        if self.latent_shortcut is not None:
            h = h + F.conv2d(z, self.latent_shortcut.to(z.dtype))
        h = _run_mid(self.mid, h)
        for stage in reversed(self.up):
            h = _run_blocks(stage, h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))
