"""Wavelet diffusion GAN (WaveDiff; Phung et al., "Wavelet Diffusion Models are fast and scalable
image generators", CVPR 2023): a denoising diffusion GAN (`gan_chain.py`) whose generator and
discriminator see the input's Haar subbands instead of its pixels, here the autoencoder's latents.

The input x (B, c, H, W) enters as its four subbands (B, 4c, H/2, W/2) (`nn/wavelets.py`), so
every layer runs at a quarter of the positions, and the generator's output subbands are inverted
back to x̃_0 (Sec. 3.2). Inside, the paper's wavelet-aware pieces (Sec. 3.3):
- frequency-aware downsampling: features → DWT; the next level gets conv(LL) + conv(LH, HL, HH)
  (the details are kept, not averaged away), and the detail bands are remembered;
- frequency-aware upsampling: the IDWT of the coarse features as LL with the remembered details;
- a frequency bottleneck: the middle blocks run on the LL of one more DWT, the details added back
  by the IDWT;
- wavelet residual connections: the input's LL pyramid added at every encoder level.
`wavelet=False` is DDGAN's plain generator at the same widths (average pooling, nearest
upsampling, on x itself): the ablation that isolates what the wavelets do.
The timestep k and the latent z (through a mapping MLP) condition every residual block by adaptive
group normalisation, as DDGAN's.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from latentdiff.autoencoder.codec import LatentCodec
from latentdiff.config_systems import WaveletDiscriminatorConfig, WaveletGeneratorConfig
from latentdiff.gan_chain import GANChainSchedule
from latentdiff.network import NetworkCost, network_cost
from latentdiff.nn.layers import group_norm, minibatch_std, timestep_embedding
from latentdiff.nn.wavelets import haar_dwt, haar_idwt


def _gn(channels: int) -> nn.GroupNorm:
    """Up to 32 groups of at least two channels each (a 1×1 bottleneck still has two values)."""
    return group_norm(channels, groups=math.gcd(32, max(1, channels // 2)))


def _subbands(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, 4C, H/2, W/2): the Haar subbands LL, LH, HL, HH stacked on channels."""
    return haar_dwt(x).flatten(1, 2)


def _from_subbands(bands: torch.Tensor) -> torch.Tensor:
    """The inverse of `_subbands`: (B, 4C, h, w) → (B, C, 2h, 2w)."""
    b, c4, h, w = bands.shape
    return haar_idwt(bands.view(b, 4, c4 // 4, h, w))


class AdaGNBlock(nn.Module):
    """h + conv(SiLU(AdaGN(conv(SiLU(GN(h))), emb))) with AdaGN(x, e) = GN(x)·(1 + s(e)) + b(e),
    the residual scaled by 1/√2 (DDGAN's NCSN++ blocks)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.norm1, self.conv1 = _gn(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _gn(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.style = nn.Linear(emb_dim, 2 * c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.silu(self.norm1(h)))
        scale, shift = self.style(emb)[..., None, None].chunk(2, dim=1)
        x = self.conv2(F.silu(self.norm2(x) * (1 + scale) + shift))
        return (self.skip(h) + x) / math.sqrt(2)


class Down(nn.Module):
    """(B, C, H, W) → (B, C', H/2, W/2) and the detail bands (B, 3C, H/2, W/2) (wavelet), or
    average pooling and a 3×3 conv (plain; no details)."""

    def __init__(self, c_in: int, c_out: int, wavelet: bool):
        super().__init__()
        self.wavelet = wavelet
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.details = nn.Conv2d(3 * c_in, c_out, 1) if wavelet else None

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.wavelet:
            return self.conv(F.avg_pool2d(h, 2)), None
        bands = haar_dwt(h)  # (B, 4, C, H/2, W/2)
        details = bands[:, 1:].flatten(1, 2)
        return self.conv(bands[:, 0]) + self.details(details), details


class Up(nn.Module):
    """(B, C, h, w) → (B, C', 2h, 2w): the IDWT with the features (1×1 conv to the details' width)
    as LL and the remembered details (wavelet), or nearest upsampling; then a 3×3 conv."""

    def __init__(self, c_in: int, c_detail: int, c_out: int, wavelet: bool):
        super().__init__()
        self.wavelet = wavelet
        self.to_ll = nn.Conv2d(c_in, c_detail, 1) if wavelet else None
        self.conv = nn.Conv2d(c_detail if wavelet else c_in, c_out, 3, padding=1)

    def forward(self, h: torch.Tensor, details: torch.Tensor | None) -> torch.Tensor:
        if not self.wavelet:
            return self.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        b, _, hh, ww = h.shape
        bands = torch.cat([self.to_ll(h), details], 1).view(b, 4, -1, hh, ww)
        return self.conv(haar_idwt(bands))


class WaveletGenerator(nn.Module):
    """G(x_k, k, z) → x̃_0: x_k (B, c, H, W), k (B,) the chain's step, z (B, z_dim) → (B, c, H, W).
    A UNet over `channel_mult` levels (`blocks` AdaGN blocks each, skip connections), the pieces of
    the module docstring; H and W must be multiples of `latent_multiple`."""

    def __init__(self, latent_channels: int, cfg: WaveletGeneratorConfig):
        super().__init__()
        self.config, self.latent_channels = cfg, latent_channels
        c_in = 4 * latent_channels if cfg.wavelet else latent_channels
        widths = [cfg.channels * m for m in cfg.channel_mult]
        e = cfg.emb_dim
        self.time_embed = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        mapping: list[nn.Module] = []
        for i in range(cfg.mapping_layers):
            mapping += [nn.Linear(cfg.z_dim if i == 0 else e, e), nn.SiLU()]
        self.mapping = nn.Sequential(*mapping)
        self.conv_in = nn.Conv2d(c_in, widths[0], 3, padding=1)
        self.encoder = nn.ModuleList(nn.ModuleList(AdaGNBlock(w, w, e) for _ in range(cfg.blocks))
                                     for w in widths)
        self.downs = nn.ModuleList(Down(a, b, cfg.wavelet) for a, b in zip(widths, widths[1:]))
        # wavelet residual connections: the input's pyramid into every coarser level
        self.input_skips = nn.ModuleList(nn.Conv2d(c_in, w, 1) for w in widths[1:])
        self.middle = nn.ModuleList(AdaGNBlock(widths[-1], widths[-1], e) for _ in range(2))
        self.decoder = nn.ModuleList(
            nn.ModuleList(AdaGNBlock(2 * w if i == 0 else w, w, e) for i in range(cfg.blocks))
            for w in widths)
        self.ups = nn.ModuleList(Up(b, a, a, cfg.wavelet) for a, b in zip(widths, widths[1:]))
        self.conv_out = nn.Sequential(_gn(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], c_in, 3,
                                                                           padding=1))

    @property
    def latent_multiple(self) -> int:
        return self.config.latent_multiple

    def forward(self, x: torch.Tensor, k: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        wavelet = self.config.wavelet
        inputs = _subbands(x) if wavelet else x
        emb = self.time_embed(timestep_embedding(k, self.config.emb_dim)) + self.mapping(z)
        h, skips, details, pyramid = self.conv_in(inputs), [], [], inputs
        for level, blocks in enumerate(self.encoder):
            if level > 0:
                h, d = self.downs[level - 1](h)
                details.append(d)
                pyramid = haar_dwt(pyramid)[:, 0] if wavelet else F.avg_pool2d(pyramid, 2)
                h = (h + self.input_skips[level - 1](pyramid)) / math.sqrt(2)
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
        bands = haar_dwt(h) if wavelet else None  # the frequency bottleneck
        m = bands[:, 0] if wavelet else h
        for block in self.middle:
            m = block(m, emb)
        h = haar_idwt(torch.cat([m[:, None], bands[:, 1:]], 1)) if wavelet else m
        for level in reversed(range(len(self.decoder))):
            h = torch.cat([h, skips[level]], 1)
            for block in self.decoder[level]:
                h = block(h, emb)
            if level > 0:
                h = self.ups[level - 1](h, details[level - 1])
        out = self.conv_out(h)
        return _from_subbands(out) if wavelet else out


class WaveletDiscriminator(nn.Module):
    """D(x_{k−1}, x_k, k) → logits (B,): the pair (B, 2c, H, W) as subbands (wavelet) or as it is;
    a 3×3 conv, `blocks` residual down blocks (LeakyReLU 0.2, the timestep embedding added after
    the first conv, `Down` as the resampling; the last block keeps its size), the minibatch
    standard deviation (groups of up to 4) as one more channel, a 3×3 conv, a sum over positions
    and a linear layer (DDGAN's discriminator, smaller)."""

    def __init__(self, latent_channels: int, cfg: WaveletDiscriminatorConfig, wavelet: bool):
        super().__init__()
        self.config, self.wavelet = cfg, wavelet
        w, e = cfg.channels, cfg.emb_dim
        self.emb_dim = e
        self.time_embed = nn.Sequential(nn.Linear(e, e), nn.LeakyReLU(0.2))
        c_in = 2 * latent_channels * (4 if wavelet else 1)
        self.conv_in = nn.Conv2d(c_in, w, 3, padding=1)
        self.conv1 = nn.ModuleList(nn.Conv2d(w, w, 3, padding=1) for _ in range(cfg.blocks))
        self.temb = nn.ModuleList(nn.Linear(e, w) for _ in range(cfg.blocks))
        self.conv2 = nn.ModuleList(nn.Conv2d(w, w, 3, padding=1) for _ in range(cfg.blocks))
        self.downs = nn.ModuleList(Down(w, w, wavelet) for _ in range(cfg.blocks - 1))
        self.conv_std = nn.Conv2d(w + 1, w, 3, padding=1)
        self.head = nn.Linear(w, 1)

    def forward(self, x_prev: torch.Tensor, x_k: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        pair = torch.cat([x_prev, x_k], 1)
        h = self.conv_in(_subbands(pair) if self.wavelet else pair)
        emb = self.time_embed(timestep_embedding(k, self.emb_dim))
        for i in range(self.config.blocks):
            x = self.conv1[i](F.leaky_relu(h, 0.2)) + self.temb[i](emb)[..., None, None]
            x = self.conv2[i](F.leaky_relu(x, 0.2))
            if i < self.config.blocks - 1:
                x, _ = self.downs[i](x)
                h = F.avg_pool2d(h, 2)
            h = (h + x) / math.sqrt(2)
        h = F.leaky_relu(self.conv_std(minibatch_std(h)), 0.2)
        return self.head(h.sum((2, 3))).squeeze(1)


@dataclass
class WaveDiff:
    """The sampled system: the generator (its EMA), the codec of the latents it was trained on, the
    chain; images (B, C, image_size, image_size) in [-1, 1]. Unconditional."""

    generator: WaveletGenerator
    codec: LatentCodec
    schedule: GANChainSchedule
    image_size: int
    # what sample-quality evaluation reads of any model (`evaluation.sample_quality`): unconditional
    class_names: tuple[str, ...] = ()
    conditioner: None = None
    trained_with_null: bool = False
    num_classes: None = None

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.image_size // self.codec.downsampling_factor
        return self.codec.latent_channels, side, side

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def network_cost(self) -> NetworkCost:
        """Parameters and GFLOPs of one generator evaluation (one step) at the training size."""
        z = torch.zeros(1, self.generator.config.z_dim, device=self.device)
        return network_cost(self.generator, self.latent_shape, z=z)


def reverse_chain(generator: WaveletGenerator, schedule: GANChainSchedule, x_T: torch.Tensor,
                  draws: Callable[[tuple[int, ...]], torch.Tensor]) -> torch.Tensor:
    """x_0 from x_T (B, c, h, w) ~ N(0, I) in T steps: x̃_0 = G(x_k, k, z), x_{k−1} ~ q(x_{k−1} |
    x_k, x̃_0) (the last step returns x̃_0 itself); `draws(shape)` gives the standard normal z and
    posterior noise, drawn in that order at every step (per-sample generators make a sample depend
    only on its seed)."""
    x, b = x_T, len(x_T)
    for k in range(schedule.T, 0, -1):
        kk = torch.full((b,), k, device=x.device, dtype=torch.long)
        x0 = generator(x, kk, draws((b, generator.config.z_dim)))
        x = x0 if k == 1 else schedule.posterior(x0, x, kk, draws(tuple(x.shape)))
    return x
