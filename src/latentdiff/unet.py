"""The time-conditional UNet ε_θ(z_t, t, y) (paper Sec. 3.2; ADM, Dhariwal & Nichol 2021).

Module names mirror the original `openaimodel.UNetModel` so published checkpoints load by name:
`time_embed`, `label_emb`, `input_blocks.{i}.{j}`, `middle_block.{j}`, `output_blocks.{i}.{j}`,
`out`; ResBlocks hold `in_layers`, `emb_layers`, `out_layers`, `skip_connection`. The network knows
nothing of β, σ or the parameterisation: it maps (x_in, t) to a raw output that `denoiser.py`
interprets.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from latentdiff.config import UNetConfig
from latentdiff.nn.attention import AttentionBlock
from latentdiff.nn.layers import (cell_centres, group_norm, guidance_features, network_input,
                                  timestep_embedding, zero_module)
from latentdiff.nn.transformer import SpatialTransformer
from latentdiff.nn.wavelets import WaveletDownsample, WaveletUpsample


class ResBlock(nn.Module):
    """Residual block with the time embedding: h = in_layers(x) + emb (or GN(h)·(1+scale)+shift),
    out = skip(x) + h.

    `resample` "down" / "up" (the original's resblock_updown): h is average-pooled /
    nearest-upsampled ×2 between in_layers' activation and its conv, and x likewise before the skip
    connection (no extra weights)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int,
                 dropout: float, scale_shift: bool,
                 resample: str | None = None):
        super().__init__()
        self.scale_shift = scale_shift
        # parameter-free resampling (as the original's h_upd / x_upd): the UNet's own Downsample /
        # Upsample, no conv
        self.resample = {"down": Downsample(channels, False), "up": Upsample(channels, False),
                         None: None}[resample]
        self.in_layers = nn.Sequential(group_norm(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(),
                                        nn.Linear(emb_channels,
                                                  out_channels * (2 if scale_shift else 1)))
        self.out_layers = nn.Sequential(group_norm(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = (nn.Identity() if channels == out_channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.resample is None:
            h = self.in_layers(x)
        else:
            h, x = self.in_layers[2](self.resample(self.in_layers[:2](x))), self.resample(x)
        emb_out = self.emb_layers(emb)[..., None, None]  # (B, C or 2C, 1, 1)
        if self.scale_shift:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    """Halve H, W: stride-2 3×3 conv (`op`), or 2×2 average pooling when conv_resample is off."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double H, W: nearest-neighbour interpolation, then a 3×3 conv (`conv`) when conv_resample is
    on."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


class TimestepEmbedSequential(nn.Sequential):
    """A sequence of layers where ResBlocks also receive the embedding and spatial transformers the
    context. With `checkpointing` (set by `UNetModel.gradient_checkpointing`), training recomputes
    the block's activations in the backward pass instead of storing them."""

    checkpointing = False

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(self._layers, x, emb, context, context_mask, use_reentrant=False)
        return self._layers(x, emb, context, context_mask)

    def _layers(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None,
                context_mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, (ResBlock, WaveletDownsample, WaveletUpsample)):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context, context_mask)
            else:
                x = layer(x)
        return x


def coordinate_maps(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, h, w): x and y of each latent cell centre in [−1, 1] (CoordConv), for x
    (B, c, h, w)."""
    b, _, h, w = x.shape
    return torch.stack(cell_centres(h, w, x.device, x.dtype)).expand(b, -1, -1, -1)


def pooled(context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, M, d) context, (B, M) bool mask of real tokens (None: all) → (B, d) mean over the real
    tokens."""
    if mask is None:
        return context.mean(1)
    weights = mask.to(context.dtype).unsqueeze(-1)
    return (context * weights).sum(1) / weights.sum(1).clamp(min=1)


class UNetModel(nn.Module):
    """x (B, in_channels, h, w), t (B,) → (B, out_channels, h, w); h and w divisible by
    2^(levels − 1).

    forward(x, timesteps, context=None, class_labels=None, concat=None, context_mask=None):
    `class_labels` (B,) int for class-conditional models; `context` (B, M, context_dim) the
    cross-attention input of models with spatial transformers (`context_mask` (B, M) bool marks real
    tokens); `concat` (B, k, h, w) spatially aligned inputs concatenated to x along channels (the
    original's "concat" conditioning), so in_channels = c + k; `guidance` (B,) the guidance scale of
    a guidance-embedded student (unet.guidance_embedding).
    """

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.config = cfg
        mc, emb_dim = cfg.model_channels, 4 * cfg.model_channels
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        if cfg.num_classes is not None:
            self.label_emb = nn.Embedding(cfg.num_classes, emb_dim)
        if cfg.pooled_context:
            self.context_emb = nn.Linear(cfg.context_dim, emb_dim)
        if cfg.guidance_embedding:
            self.guidance_proj = zero_module(nn.Linear(mc, mc, bias=False))

        def res(c_in: int, c_out: int, resample: str | None = None) -> ResBlock:
            return ResBlock(c_in, emb_dim, c_out, cfg.dropout, cfg.use_scale_shift_norm, resample)

        def attn(c: int) -> nn.Module:
            heads = cfg.num_heads if cfg.num_heads != -1 else c // cfg.head_channels
            if cfg.context_dim is None:
                return AttentionBlock(c, heads)
            return SpatialTransformer(c, heads, c // heads, cfg.transformer_depth, cfg.context_dim,
                                      linear_projection=cfg.linear_projection,
                                      position_frequencies=cfg.position_frequencies)

        first_in = cfg.in_channels + (2 if cfg.coordinate_channels else 0)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(first_in, mc, 3, padding=1))])
        skip_channels, ch, ds = [mc], mc, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers = [res(ch, mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers.append(attn(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                down = (res(ch, ch, "down") if cfg.resblock_updown
                        else WaveletDownsample(ch, emb_dim, cfg.conv_resample) if cfg.wavelet_gates
                        else Downsample(ch, cfg.conv_resample))
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_channels.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers.append(attn(ch))
                if level and i == cfg.num_res_blocks:
                    layers.append(res(ch, ch, "up") if cfg.resblock_updown
                                  else WaveletUpsample(ch, emb_dim, cfg.conv_resample)
                                  if cfg.wavelet_gates
                                  else Upsample(ch, cfg.conv_resample))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(group_norm(ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(ch, cfg.out_channels, 3, padding=1)))

    def gradient_checkpointing(self, enabled: bool = True) -> "UNetModel":
        """Recompute each block's activations in the backward pass (less memory for large models
        and batches, about one more forward of time)."""
        for block in self.modules():
            if isinstance(block, TimestepEmbedSequential):
                block.checkpointing = enabled
        return self

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None,
                class_labels: torch.Tensor | None = None, concat: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None,
                guidance: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        x, context = network_input(cfg, x, context, class_labels, concat, guidance,
                                   self.time_embed[0].weight.dtype)
        if cfg.coordinate_channels:
            x = torch.cat([x, coordinate_maps(x)], dim=1)
        features = timestep_embedding(timesteps, cfg.model_channels).to(x.dtype)
        if guidance is not None:
            features = features + guidance_features(self.guidance_proj, guidance,
                                                    cfg.model_channels, len(x), x.dtype)
        emb = self.time_embed(features)
        if class_labels is not None:
            emb = emb + self.label_emb(class_labels)
        if cfg.pooled_context:
            emb = emb + self.context_emb(pooled(context, context_mask))
        skips, h = [], x
        for block in self.input_blocks:
            h = block(h, emb, context, context_mask)
            skips.append(h)
        h = self.middle_block(h, emb, context, context_mask)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context, context_mask)
        return self.out(h)
