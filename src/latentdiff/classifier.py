"""A noise-aware classifier p_φ(y | z_t, σ) for classifier guidance (Dhariwal & Nichol 2021, Sec. 4
and App. C): the encoder half of a UNet (input blocks and middle block, with the timestep embedding)
followed by GroupNorm, SiLU, attention pooling and a linear layer to the class logits.

It reads latents x in the VE scale every sampler uses, through the guided model's preconditioning:
logits = net(c_in(σ)·x, c_noise(σ)), the same network input the diffusion model sees at σ.
"""

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from latentdiff.config import UNetConfig
from latentdiff.nn.layers import group_norm, timestep_embedding
from latentdiff.preconditioning import Preconditioning, append_dims
from latentdiff.unet import UNetModel


class AttentionPool(nn.Module):
    """(B, C, h, w) → (B, out): one query, the mean token, attends over the mean and every position
    (multi-head, `heads`); without positional embeddings, so it takes any latent size."""

    def __init__(self, channels: int, heads: int, out: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        tokens = h.flatten(2).transpose(1, 2)  # (B, N, C)
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)
        b, n, c = tokens.shape
        q, k, v = (t.view(b, n, self.heads, c // self.heads).transpose(1, 2)
                   for t in self.qkv(tokens).chunk(3, dim=-1))
        pooled = F.scaled_dot_product_attention(q[:, :, :1], k, v)  # (B, heads, 1, C / heads)
        return self.proj(pooled.transpose(1, 2).reshape(b, c))


class ClassifierNet(nn.Module):
    """x (B, c, h, w), noise level t (B,) → logits (B, num_classes). `trunk`: the UNet whose
    time embedding, input blocks and middle block are kept (its decoder half is not built into the
    result); h, w divisible by 2^(levels − 1)."""

    def __init__(self, trunk: UNetConfig, num_classes: int):
        super().__init__()
        self.config, self.num_classes = trunk, num_classes
        unet = UNetModel(trunk)
        self.time_embed, self.input_blocks, self.middle_block = (unet.time_embed, unet.input_blocks,
                                                                 unet.middle_block)
        channels = trunk.model_channels * trunk.channel_mult[-1]
        heads = (trunk.num_heads if trunk.num_heads > 0
                 else max(1, channels // trunk.head_channels))
        self.out = nn.Sequential(group_norm(channels), nn.SiLU())
        self.pool = AttentionPool(channels, heads, num_classes)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(x.dtype))
        h = x
        for block in self.input_blocks:
            h = block(h, emb, None, None)
        return self.pool(self.out(self.middle_block(h, emb, None, None)))


def classifier_trunk(trunk: UNetConfig, latent_channels: int) -> UNetConfig:
    """The trunk config with the model's latent channels in and out."""
    return dataclasses.replace(trunk, in_channels=latent_channels, out_channels=latent_channels)


class NoiseClassifier(nn.Module):
    """log p_φ(y | x, σ) (B, K) for VE-scale latents x (B, c, h, w) and σ (B,): `net` on the
    preconditioned input c_in(σ)·x at c_noise(σ). `class_names`: the K classes."""

    def __init__(self, net: ClassifierNet, precond: Preconditioning,
                 class_names: tuple[str, ...] = ()):
        super().__init__()
        self.net, self.precond, self.class_names = net, precond, class_names

    def logits(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32).expand(x.shape[0])
        c_in = append_dims(self.precond.c_in(sigma), x).to(x.dtype)
        return self.net(c_in * x, self.precond.c_noise(sigma))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.logits(x, sigma).float(), dim=-1)
